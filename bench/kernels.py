"""python -m bench.kernels [-n 50] [--rounds 5] [--json FILE]

Bandwidth of the fusion, compression and reduction kernels (kernels/*.cu) on the GPU,
against a plain device-to-device copy of the same bucket (cudaMemcpyAsync), measured in
the same run, interleaved, with CUDA events:

  pack / unpack           a 25 MB float32 bucket made of 100 arrays, and of 5000 uneven ones
  unpack x 1/4            the same with the 1/world scale fused in
  unpack_fp16             float16 wire -> the float32 arrays, scale fused
  compress_fp16           float32 bucket -> float16 wire, scale fused
  reduce_into sum         dst += src over the bucket

"bytes moved" counts bytes read plus bytes written; GB/s is that over the device time;
"vs copy" is the ratio to the copy's GB/s (the issue's target: pack and unpack >= 70%).
Each timed run of n launches starts behind a busy-wait kernel, so all n are queued before
the GPU reaches them and the events time the device, not Python; a row where the queue
still ran dry is marked "host-bound". Launches go through kernels.cuda's plan_* functions
(argument checks done once); the host cost of a full kernels.pack call is printed after.
Without CuPy or a GPU it prints one line saying so and exits 0.
"""
import argparse
import json
import sys
import time

import numpy as np

import kernels
from kernels import cuda

BUCKET_BYTES = 25 * 1000 * 1000


def layouts(total_elements):
    """{name: sizes}: 100 equal arrays, and 5000 arrays of uneven sizes, same total."""
    uneven = np.random.default_rng(0).integers(1, 2 * total_elements // 5000, 5000)
    uneven = np.maximum((uneven * (total_elements / uneven.sum())).astype(int), 1)
    uneven[np.argmax(uneven)] += total_elements - uneven.sum()
    return {"100 arrays": [total_elements // 100] * 100, "5000 arrays": uneven.tolist()}


def gpu():
    """(cupy, device name), or None with the reason printed."""
    try:
        import cupy as cp
        if cp.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as error:
        print(f"bench.kernels needs CuPy and a CUDA GPU ({type(error).__name__}: {error}); nothing to measure")
        return None
    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())["name"]
    return cp, name.decode() if isinstance(name, bytes) else name


def time_ms(cp, launch, iterations, queue_seconds):
    """(ms per launch, host-bound?) from CUDA events around `iterations` launches queued
    behind a busy-wait of `queue_seconds`."""
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    cuda.busy_wait(queue_seconds)
    start.record()
    for _ in range(iterations):
        launch()
    stop.record()
    ran_dry = start.done                   # the busy-wait ended before all were queued
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / iterations, ran_dry


def cases(cp, total):
    """{name: (launch, bytes moved)} over one 25 MB bucket, checked against CuPy first."""
    bucket, other = cp.zeros(total, cp.float32), cp.ones(total, cp.float32)
    wire, target = cp.zeros(total, cp.float16), cp.empty(total, cp.float32)
    nbytes = bucket.nbytes
    table = {"device-to-device copy": (lambda: target.data.copy_from_device_async(bucket.data, nbytes), 2 * nbytes)}
    for layout, sizes in layouts(total).items():
        arrays = [cp.random.standard_normal(n, dtype=cp.float32) for n in sizes]
        kernels.pack(arrays, bucket)
        if not bool((bucket == cp.concatenate(arrays)).all()):
            raise RuntimeError(f"pack gave a wrong bucket for {layout}: run tests/test_kernels_cuda.py")
        table[f"pack, {layout}"] = (cuda.plan_pack(arrays, bucket), 2 * nbytes)
        table[f"unpack, {layout}"] = (cuda.plan_unpack(bucket, arrays), 2 * nbytes)
        table[f"unpack x 1/4, {layout}"] = (cuda.plan_unpack(bucket, arrays, 0.25), 2 * nbytes)
        table[f"unpack_fp16, {layout}"] = (cuda.plan_unpack_fp16(wire, arrays, 0.25), wire.nbytes + nbytes)
    table["compress_fp16"] = (cuda.plan_compress_fp16(bucket, wire, 0.25), nbytes + wire.nbytes)
    table["reduce_into sum"] = (cuda.plan_reduce_into(bucket, other, "sum"), 3 * nbytes)
    return table, arrays, bucket


def main(argv=None):
    parser = argparse.ArgumentParser(description="Bandwidth of the kernels/*.cu kernels against a "
                                                 "device-to-device copy, on the GPU.")
    parser.add_argument("-n", "--iterations", type=int, default=50, help="launches per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the median is shown)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    found = gpu()
    if found is None:
        return 0
    cp, name = found
    table, arrays, bucket = cases(cp, BUCKET_BYTES // 4)
    cuda.busy_wait(0)                                  # compiled before anything is timed
    queue = {}
    for case, (launch, _) in table.items():           # warm up; the host's time to queue n
        launch()
        cp.cuda.get_current_stream().synchronize()
        began = time.perf_counter()
        for _ in range(args.iterations):
            launch()
        queue[case] = 2 * (time.perf_counter() - began) + 1e-3
        cp.cuda.get_current_stream().synchronize()
    samples = {case: [] for case in table}
    dry = set()
    for _ in range(args.rounds):
        for case, (launch, _) in table.items():
            ms, ran_dry = time_ms(cp, launch, args.iterations, queue[case])
            samples[case].append(ms)
            if ran_dry:
                dry.add(case)
    copy_ms = float(np.median(samples["device-to-device copy"]))
    copy_bw = table["device-to-device copy"][1] / copy_ms / 1e6
    print(f"# bench.kernels on {name}: {BUCKET_BYTES / 1e6:.0f} MB float32 bucket, "
          f"{args.rounds} interleaved rounds x {args.iterations} launches, medians")
    print(f"{'kernel':>28} {'bytes moved':>12} {'time (us)':>10} {'GB/s':>8} {'vs copy':>8}")
    rows = []
    for case, (_, moved) in table.items():
        ms = float(np.median(samples[case]))
        bandwidth = moved / ms / 1e6
        rows.append({"kernel": case, "bytes": moved, "time_us": 1e3 * ms, "GBps": bandwidth,
                     "vs_copy": bandwidth / copy_bw, "host_bound": case in dry})
        note = "  host-bound" if case in dry else ""
        print(f"{case:>28} {moved:>12} {1e3 * ms:>10.1f} {bandwidth:>8.1f} {bandwidth / copy_bw:>8.0%}{note}")
    start = time.perf_counter()
    for _ in range(10):
        kernels.pack(arrays, bucket)
    cp.cuda.get_current_stream().synchronize()
    print(f"# a full kernels.pack call on the 5000 arrays: {1e2 * (time.perf_counter() - start):.2f} ms "
          f"of host time (checks every array, looks the table up, launches once)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": name, "bucket_bytes": BUCKET_BYTES, "iterations": args.iterations,
                       "rounds": args.rounds, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
