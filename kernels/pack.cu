// pack, unpack and unpack_fp16: many arrays <-> one flat buffer, in ONE launch whatever
// the number of arrays (the multi-tensor-apply pattern). NumPy twins: kernels/reference.py.
//
// The arrays are described by one int64 table that kernels/cuda.py builds with NumPy and
// copies to the device once per list of arrays (it caches it by the arrays' addresses):
//   table[0, n)             the device address of each array
//   table[n, 2n + 1)        offsets: array a occupies flat[offsets[a], offsets[a + 1])
//   table[2n + 1, +chunks)  for each chunk c of the flat buffer, the first array it touches
// The flat buffer is cut into chunks of `chunk` elements (a multiple of the vector width);
// block b takes chunks b, b + gridDim.x, ... and walks the arrays that overlap each one,
// so the work per block is even however uneven the arrays are, and 5000 tiny arrays cost
// as many blocks as one array of the same total size.
#include "common.cuh"

// to_flat = 1: arrays (S) -> flat (D), pack. to_flat = 0: flat (S) -> arrays (D), unpack.
// E is the element operation: Copy, Convert (float16 -> float32) or Scale (fused 1/world).
template <typename S, typename D, typename E>
__device__ __forceinline__ void multi_copy(const long long* __restrict__ table, int n, long long chunks,
                                           long long chunk, void* flat, int to_flat, double scale) {
    const long long* address = table;
    const long long* offsets = table + n;
    const long long* first = table + 2 * n + 1;
    const long long total = offsets[n];
    const E e(scale);
    for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
        const long long lo = c * chunk, hi = min64(lo + chunk, total);
        for (long long a = first[c]; a < n && offsets[a] < hi; ++a) {
            const long long from = max64(lo, offsets[a]), to = min64(hi, offsets[a + 1]);
            if (from >= to) continue;                               // an empty array
            const long long within = from - offsets[a];             // element offset in array a
            if (to_flat) {
                block_apply<S, D, E>(static_cast<D*>(flat) + from,
                                     reinterpret_cast<const S*>(address[a]) + within, to - from, e);
            } else {
                block_apply<S, D, E>(reinterpret_cast<D*>(address[a]) + within,
                                     static_cast<const S*>(flat) + from, to - from, e);
            }
        }
    }
}

// The kernel of one instance, under the plain name kernels/cuda.py gives it (see ENTRY in
// common.cuh): MULTI_COPY_ENTRY(name, S, D, E).
#define MULTI_COPY_ENTRY(NAME, S, D, ...)                                                  \
    extern "C" __global__ void __launch_bounds__(THREADS)                                  \
    NAME(const long long* __restrict__ table, int n, long long chunks, long long chunk,     \
         void* flat, int to_flat, double scale) {                                          \
        multi_copy<S, D, __VA_ARGS__>(table, n, chunks, chunk, flat, to_flat, scale);      \
    }
