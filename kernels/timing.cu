// busy_wait: keeps one thread busy for a given time. bench.kernels launches it before a
// timed run, so that the launches it times are all queued while the GPU is still busy and
// the CUDA events then measure the device alone, not the host's launch rate.
extern "C" __global__ void busy_wait(long long nanoseconds) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while ((long long)(now - start) < nanoseconds);
}
