"""python -m bench.kernels [-n 50] [--json FILE]

Bandwidth of the fusion and reduction kernels on the GPU against a plain device-to-device
copy of the same bytes, measured with CUDA events in the same run, interleaved:

  pack / unpack      a 25 MB float32 bucket made of 100 arrays, and of 5000 small arrays
  unpack (scaled)    the same with the 1/world scale fused in
  reduce_into        dst += src over the 25 MB bucket (reads 2 bytes for every byte written)
  compress_fp16      float32 bucket -> float16 wire, and unpack_fp16 back into the arrays

Bandwidth counts bytes read plus bytes written. The kernels are timed through their
launch plans (checks done once), so the figures are the device's; the Python-side cost of
a full kernels.pack call is printed separately. Without CuPy or a GPU it says so and exits.
"""
import argparse
import json
import sys
import time

import numpy as np

BUCKET_BYTES = 25 * 1000 * 1000


def layouts(total_elements):
    """{name: sizes}: 100 equal arrays, and 5000 small arrays of uneven sizes, same total."""
    uneven = np.random.default_rng(0).integers(1, 2 * total_elements // 5000, 5000)
    uneven = np.maximum((uneven * (total_elements / uneven.sum())).astype(int), 1)
    uneven[np.argmax(uneven)] += total_elements - uneven.sum()
    return {"100 arrays": [total_elements // 100] * 100, "5000 arrays": uneven.tolist()}


def time_ms(cp, fn, iterations):
    """Milliseconds per call of fn, from CUDA events around `iterations` back-to-back calls."""
    fn()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(iterations):
        fn()
    stop.record()
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / iterations


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("-n", "--iterations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        import cupy as cp
        cp.cuda.runtime.getDeviceCount()
    except Exception as error:
        print(f"bench.kernels needs CuPy and a CUDA GPU ({type(error).__name__}: {error}); nothing to measure")
        return 0
    import kernels
    from kernels import cuda
    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())["name"]
    name = name.decode() if isinstance(name, bytes) else name
    total = BUCKET_BYTES // 4
    bucket = cp.zeros(total, cp.float32)
    other = cp.ones(total, cp.float32)
    wire = cp.zeros(total, cp.float16)
    copy_target = cp.empty_like(bucket)
    cases = {"device-to-device copy": (lambda: copy_target.data.copy_from_device_async(bucket.data, bucket.nbytes),
                                       2 * bucket.nbytes)}
    arrays_by_layout = {}
    for layout, sizes in layouts(total).items():
        arrays = [cp.random.standard_normal(n, dtype=cp.float32) for n in sizes]
        arrays_by_layout[layout] = arrays
        cases[f"pack, {layout}"] = (cuda.plan_pack(arrays, bucket), 2 * bucket.nbytes)
        cases[f"unpack, {layout}"] = (cuda.plan_unpack(bucket, arrays), 2 * bucket.nbytes)
        cases[f"unpack x 1/4, {layout}"] = (cuda.plan_unpack(bucket, arrays, 0.25), 2 * bucket.nbytes)
        cases[f"unpack_fp16, {layout}"] = (lambda a=arrays: kernels.unpack_fp16(wire, a, 0.25),
                                           wire.nbytes + bucket.nbytes)
    cases["reduce_into sum"] = (lambda: kernels.reduce_into(bucket, other, "sum"), 3 * bucket.nbytes)
    cases["compress_fp16"] = (lambda: kernels.compress_fp16(bucket, wire, 0.25), bucket.nbytes + wire.nbytes)
    samples = {case: [] for case in cases}
    for _ in range(args.rounds):
        for case, (fn, _) in cases.items():
            samples[case].append(time_ms(cp, fn, args.iterations))
    copy_ms = float(np.median(samples["device-to-device copy"]))
    copy_bw = cases["device-to-device copy"][1] / copy_ms / 1e6
    print(f"# bench.kernels on {name}: {BUCKET_BYTES / 1e6:.0f} MB float32 bucket, "
          f"{args.rounds} interleaved rounds x {args.iterations} launches, medians")
    print(f"{'kernel':>32} {'time (us)':>10} {'GB/s':>8} {'vs copy':>8}")
    rows = []
    for case, (fn, nbytes) in cases.items():
        ms = float(np.median(samples[case]))
        bandwidth = nbytes / ms / 1e6
        rows.append({"kernel": case, "time_us": 1e3 * ms, "bytes": nbytes, "GBps": bandwidth,
                     "vs_copy": bandwidth / copy_bw})
        print(f"{case:>32} {1e3 * ms:>10.1f} {bandwidth:>8.1f} {bandwidth / copy_bw:>7.0%}")
    for layout, arrays in arrays_by_layout.items():
        start = time.perf_counter()
        for _ in range(10):
            kernels.pack(arrays, bucket)
        cp.cuda.get_current_stream().synchronize()
        print(f"# full kernels.pack call, {layout}: {1e3 * (time.perf_counter() - start) / 10:.2f} ms "
              f"wall per call (host checks + table lookup + launch)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": name, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
