"""Loading and launching the CUDA kernels of kernels/collectives.cu with CuPy.

The source is compiled once per process and device (cupy.RawModule, NVRTC) with every
template instance named up front; the Python functions check what a raw kernel cannot
(dtypes, contiguity, sizes, devices) before each launch and compute the launch geometry.
"""
import functools
import os
from collections import OrderedDict

import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "collectives.cu")
THREADS = 256
CHUNK = 8192                     # elements per block-chunk in the multi-array copies
C_TYPES = {np.dtype("float16"): "f16", np.dtype("float32"): "float", np.dtype("float64"): "double",
           np.dtype("int32"): "int", np.dtype("int64"): "long long"}
OPS = {"sum": "Sum", "prod": "Prod", "max": "Max", "min": "Min"}


def _names():
    names = []
    for c in C_TYPES.values():
        names += [f"reduce_into<{c}, {op}>" for op in OPS.values()]
        names.append(f"copy_arrays<{c}, {c}>")
    return names + ["convert_scaled<float, f16>", "copy_arrays<f16, float>"]


@functools.lru_cache(maxsize=None)
def _module(device_id):
    import cupy
    with open(SOURCE) as handle:
        code = handle.read()
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=code, options=("--std=c++14",), name_expressions=_names())
        module.compile()
    return module


def _kernel(name):
    import cupy
    return _module(cupy.cuda.runtime.getDevice()).get_function(name)


@functools.lru_cache(maxsize=None)
def _max_blocks(device_id):
    import cupy
    return 8 * cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]


def _grid(work_items):
    """Blocks for a grid-stride loop over work_items: enough to fill the GPU, no more."""
    import cupy
    return max(1, min(-(-work_items // THREADS), _max_blocks(cupy.cuda.runtime.getDevice())))


def _check(array, name, dtypes=None):
    import cupy
    if not isinstance(array, cupy.ndarray):
        raise TypeError(f"{name} must be a cupy.ndarray, got {type(array).__name__}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (a raw kernel ignores strides)")
    if array.device.id != cupy.cuda.runtime.getDevice():
        raise ValueError(f"{name} is on GPU {array.device.id}, the current device is "
                         f"{cupy.cuda.runtime.getDevice()}")
    if dtypes is not None and array.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {array.dtype}; the CUDA kernels take "
                        f"{', '.join(str(d) for d in dtypes)}")


def reduce_into(dst, src, op, reverse=False):
    """dst = dst <op> src (reverse: src <op> dst) on the GPU, one launch."""
    _check(dst, "dst", C_TYPES)
    _check(src, "src", C_TYPES)
    if dst.dtype != src.dtype or dst.shape != src.shape:
        raise ValueError(f"reduce_into needs equal shapes and dtypes, got {dst.shape} {dst.dtype} "
                         f"and {src.shape} {src.dtype}")
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}: use one of {', '.join(OPS)}")
    n = dst.size
    if n:
        kernel = _kernel(f"reduce_into<{C_TYPES[dst.dtype]}, {OPS[op]}>")
        kernel((_grid(-(-n // 4)),), (THREADS,), (dst, src, np.int64(n), np.int32(bool(reverse))))
    return dst


_TABLES = OrderedDict()          # recent pointer tables, so repeated buckets skip the upload


def _table(arrays):
    """The device table of (pointers, bucket offsets, sizes) and block-chunks for `arrays`,
    built with NumPy and uploaded in one copy; cached by pointers and sizes."""
    import cupy
    pointers = np.array([a.data.ptr for a in arrays], np.int64)
    sizes = np.array([a.size for a in arrays], np.int64)
    key = (cupy.cuda.runtime.getDevice(), pointers.tobytes(), sizes.tobytes())
    cached = _TABLES.get(key)
    if cached is not None:
        _TABLES.move_to_end(key)
        return cached
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    counts = -(-sizes // CHUNK)
    chunk_array = np.repeat(np.arange(len(arrays), dtype=np.int64), counts)
    first_chunk = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    chunk_start = (np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first_chunk, counts)) * CHUNK
    table = cupy.asarray(np.concatenate([pointers, offsets, sizes, chunk_array, chunk_start]))
    entry = (table, len(arrays), int(counts.sum()), int(sizes.sum()))
    _TABLES[key] = entry
    if len(_TABLES) > 64:
        _TABLES.popitem(last=False)
    return entry


def _copy_plan(arrays, bucket, to_bucket, scale, source_dtype, target_dtype):
    """A no-argument function that launches the multi-array copy (checks done up front)."""
    for i, array in enumerate(arrays):
        _check(array, f"arrays[{i}]")
    table, n, chunks, total = _table(arrays)
    if total > bucket.size:
        raise ValueError(f"the arrays hold {total} elements but the bucket only {bucket.size}")
    if not chunks:
        return lambda: None
    kernel = _kernel(f"copy_arrays<{C_TYPES[source_dtype]}, {C_TYPES[target_dtype]}>")
    grid = (max(1, min(chunks, _max_blocks(bucket.device.id))),)
    args = (table, np.int32(n), np.int32(chunks), np.int64(CHUNK), bucket, np.int32(to_bucket),
            np.float64(scale), np.int32(scale != 1.0))
    return lambda: kernel(grid, (THREADS,), args)


def _same_dtype(arrays, bucket, what):
    for i, array in enumerate(arrays):
        if array.dtype != bucket.dtype:
            raise TypeError(f"{what}: arrays[{i}] has dtype {array.dtype} but the bucket {bucket.dtype}")


def pack(arrays, bucket):
    """Copy every array into the flat bucket, in order, in ONE launch; returns bucket."""
    plan_pack(arrays, bucket)()
    return bucket


def plan_pack(arrays, bucket):
    """Check once and return a function that launches pack(arrays, bucket) (for loops and
    benchmarks that repeat the same copy: the launch then costs no Python-side checks)."""
    _check(bucket, "bucket", C_TYPES)
    _same_dtype(arrays, bucket, "pack")
    return _copy_plan(arrays, bucket, True, 1.0, bucket.dtype, bucket.dtype)


def unpack(bucket, arrays, scale=1.0):
    """Copy the bucket back into the arrays times `scale` (fused), in ONE launch."""
    plan_unpack(bucket, arrays, scale)()
    return arrays


def plan_unpack(bucket, arrays, scale=1.0):
    """Check once and return a function that launches unpack(bucket, arrays, scale)."""
    _check(bucket, "bucket", C_TYPES)
    _same_dtype(arrays, bucket, "unpack")
    if scale != 1.0 and bucket.dtype.kind != "f":
        raise TypeError(f"unpack with a scale needs a floating-point bucket, got {bucket.dtype}")
    return _copy_plan(arrays, bucket, False, scale, bucket.dtype, bucket.dtype)


def compress_fp16(bucket, wire, scale=1.0):
    """wire = float16(bucket * scale) for a float32 bucket, one launch."""
    _check(bucket, "bucket", [np.dtype("float32")])
    _check(wire, "wire", [np.dtype("float16")])
    if wire.size != bucket.size:
        raise ValueError(f"wire has {wire.size} elements, the bucket {bucket.size}")
    if bucket.size:
        _kernel("convert_scaled<float, f16>")((_grid(bucket.size),), (THREADS,),
                                              (wire, bucket, np.int64(bucket.size), np.float64(scale)))
    return wire


def unpack_fp16(wire, arrays, scale=1.0):
    """float32 arrays = float(wire) * scale, in pack order, in ONE launch."""
    _check(wire, "wire", [np.dtype("float16")])
    for i, array in enumerate(arrays):
        if array.dtype != np.float32:
            raise TypeError(f"unpack_fp16: arrays[{i}] must be float32, got {array.dtype}")
    _copy_plan(arrays, wire, False, scale, np.dtype("float16"), np.dtype("float32"))()
    return arrays
