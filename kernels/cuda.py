"""Loading and launching the CUDA kernels of kernels/*.cu with CuPy.

Each .cu file is compiled by NVRTC (cupy.RawModule) once per process and device, on first
use, with one extern "C" kernel per template instance the functions below launch (`NAMES`:
`module_source` appends an <KERNEL>_ENTRY line per instance, named by `entry_name`).
Plain names instead of name_expressions let CuPy keep the compiled module in its on-disk
cache (per source hash, options and GPU architecture; CuPy skips that cache for modules
with name_expressions), so later runs load it instead of compiling (about 4 s per rank).
`#include "x.cuh"` lines are replaced by the header's text first, so NVRTC needs no
include path and the cache key sees header edits.

Every public function checks what a raw kernel cannot (cupy.ndarray, dtype, C-contiguity,
current device, sizes) before launching, and computes the launch geometry: blocks of
THREADS threads over chunks of the data, as many blocks as the GPU holds at once at most.
`plan_<kernel>(...)` does the checks once and returns a no-argument function that only
launches (for loops and benchmarks that repeat the same call); `<kernel>(...)` is
`plan_<kernel>(...)()`. Launches go to CuPy's current stream and do not synchronise.
"""
import functools
import os
import re
import threading
from collections import OrderedDict

import numpy as np

from . import DEVICE_DTYPES, reference, wheels

HERE = os.path.dirname(os.path.abspath(__file__))
OPTIONS = ("--std=c++17",)
THREADS = 256                    # threads per block; must equal THREADS in common.cuh
MAX_ROWS = 16                    # a chunk is at most 16 block-wide rows of 16-byte vectors
TABLES_KEPT = 64                 # multi-array tables cached on the device (LRU)
F16, F32 = np.dtype("float16"), np.dtype("float32")
C_TYPES = dict(zip(DEVICE_DTYPES, ("f16", "float", "double", "int", "long long")))   # dtype -> CUDA type
OPS = {"sum": "Sum", "prod": "Prod", "max": "Max", "min": "Min"}


def _instances():
    """{file: name expressions}: every kernel instance the functions below launch."""
    floats = [c for d, c in C_TYPES.items() if d.kind == "f"]
    return {
        "reduce.cu": [f"reduce_into<{c}, {op}>" for c in C_TYPES.values() for op in OPS.values()],
        "pack.cu": [f"multi_copy<{c}, {c}, Copy<{c}>>" for c in C_TYPES.values()]
                   + [f"multi_copy<{c}, {c}, Scale<{c}, {c}>>" for c in floats]
                   + ["multi_copy<f16, float, Convert<f16, float>>", "multi_copy<f16, float, Scale<f16, float>>"],
        "compress.cu": ["convert<float, f16, Convert<float, f16>>", "convert<float, f16, Scale<float, f16>>"],
        "timing.cu": [],         # extern "C" busy_wait
    }


NAMES = _instances()


def source(filename):
    """The text of kernels/<filename> with each `#include "x.cuh"` replaced by that header
    (and its `#pragma once` dropped): self-contained C++ for NVRTC."""
    with open(os.path.join(HERE, filename)) as handle:
        text = handle.read()

    def inline(match):
        return source(match.group(1)).replace("#pragma once\n", "")
    return re.sub(r'^#include "([\w.]+\.cuh)"[ \t]*$', inline, text, flags=re.M)


def entry_name(expression):
    """The extern "C" name of a kernel instance: "reduce_into<float, Sum>" -> "reduce_into_float_Sum"."""
    return re.sub(r"\W+", "_", expression).strip("_")


def module_source(filename):
    """The full text compiled for `filename`: `source(filename)` plus one
    <KERNEL>_ENTRY(entry name, template arguments) line per instance in NAMES."""
    lines = []
    for expression in NAMES[filename]:
        kernel, arguments = re.fullmatch(r"(\w+)<(.*)>", expression).groups()
        lines.append(f"{kernel.upper()}_ENTRY({entry_name(expression)}, {arguments})")
    return source(filename) + "\n" + "\n".join(lines) + "\n"


def _cupy():
    wheels.preload()                 # NVRTC from its wheel before CuPy first compiles
    try:
        import cupy
    except ImportError as error:
        raise TypeError("these arguments are not NumPy arrays, and the CUDA path needs CuPy, "
                        "which is not installed (pip install '.[gpu]')") from error
    return cupy


@functools.cache
def _module(filename, device):
    cupy = _cupy()
    with cupy.cuda.Device(device):
        return cupy.RawModule(code=module_source(filename), options=OPTIONS)


@functools.cache
def _kernel(filename, name, device):
    """The compiled kernel `name` (an expression of NAMES, or an extern "C" name) of
    `filename` on `device` (compiles the file, or loads it from CuPy's cache, on first use)."""
    with _cupy().cuda.Device(device):
        entry = entry_name(name) if name in NAMES[filename] else name
        return _module(filename, device).get_function(entry)


def _function(filename, name, device):
    """The kernel every launch below goes through (tests wrap it to count launches)."""
    return _kernel(filename, name, device)


@functools.cache
def _max_blocks(filename, name, device):
    """Blocks of THREADS threads of this kernel the GPU holds at once (a full grid-stride
    grid): the occupancy API's blocks per multiprocessor (registers decide: ptxas reports
    48-103 per thread, so 2-4 blocks fit, not the 8 a thread count alone suggests), times
    the multiprocessors."""
    cupy = _cupy()
    with cupy.cuda.Device(device):    # RawKernel.kernel: the CUfunction of the current device
        handle = _kernel(filename, name, device).kernel.ptr
        per_sm = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(handle, THREADS, 0)
    return cupy.cuda.Device(device).attributes["MultiProcessorCount"] * max(1, per_sm)


def _geometry(total, itemsize, blocks):
    """(chunk, chunks, blocks) for `total` elements whose wider type has `itemsize` bytes,
    for a kernel of which `blocks` fit the GPU at once: chunks are whole rows of THREADS
    16-byte vectors, about one chunk per block for large data (at most MAX_ROWS rows, then
    blocks loop), as many blocks as chunks when small."""
    row = THREADS * (16 // itemsize)
    chunk = row * max(1, min(MAX_ROWS, -(-total // (blocks * row))))
    chunks = -(-total // chunk)
    return chunk, chunks, min(chunks, blocks)


def _check(what, name, array, device, dtypes=C_TYPES):
    """TypeError/ValueError unless `array` is a C-contiguous cupy.ndarray of one of
    `dtypes` on `device`."""
    cupy = _cupy()
    if not isinstance(array, cupy.ndarray):
        raise TypeError(f"{what}: {name} is a {type(array).__name__}; pass all cupy.ndarray "
                        f"(GPU) or all numpy.ndarray (CPU)")
    if array.dtype not in dtypes:
        raise TypeError(f"{what}: {name} has dtype {array.dtype}; the CUDA kernel takes "
                        f"{', '.join(str(d) for d in dtypes)}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{what}: {name} is not C-contiguous (shape {array.shape}, strides "
                         f"{array.strides}) and a raw kernel ignores strides; pass a contiguous "
                         f"array (cupy.ascontiguousarray) and copy the result back")
    if array.data.device_id != device:
        raise ValueError(f"{what}: {name} is on GPU {array.data.device_id} but the current "
                         f"device is GPU {device}; use arrays on one device, under "
                         f"`with cupy.cuda.Device({array.data.device_id}):`")


def _nothing():
    pass


# ---- reduce_into ---------------------------------------------------------------------
def plan_reduce_into(dst, src, op, reverse=False):
    """Check once; return a function launching dst = dst <op> src (reverse: src <op> dst)."""
    device = _cupy().cuda.runtime.getDevice()
    _check("reduce_into", "dst", dst, device)
    _check("reduce_into", "src", src, device)
    reference.check_reduce(dst, src, op)
    if not dst.size:
        return _nothing
    name = f"reduce_into<{C_TYPES[dst.dtype]}, {OPS[op]}>"
    chunk, _, blocks = _geometry(dst.size, dst.itemsize, _max_blocks("reduce.cu", name, device))
    kernel = _function("reduce.cu", name, device)
    args = (dst, src, np.int64(dst.size), np.int64(chunk), np.int32(bool(reverse)))
    return functools.partial(kernel, (blocks,), (THREADS,), args)


def reduce_into(dst, src, op, reverse=False):
    """dst = dst <op> src (reverse: src <op> dst) on the GPU in one launch; returns dst.
    Cost: reads dst and src, writes dst (16-byte vectors when both share their alignment)."""
    plan_reduce_into(dst, src, op, reverse)()
    return dst


# ---- pack, unpack, unpack_fp16: many arrays <-> one flat buffer ------------------------
_TABLES = OrderedDict()          # (device, chunk, addresses, sizes) -> device table
_TABLES_LOCK = threading.Lock()  # asynchronous collectives may pack from another thread


def _table(arrays, itemsize, device, max_blocks):
    """The int64 device table of kernels/pack.cu for `arrays` (addresses, offsets, first
    array of each chunk), built with NumPy and sent in ONE host-to-device copy of
    16 bytes per array + 8 per chunk; the TABLES_KEPT most recent layouts are cached by
    their addresses and sizes, so a repeated list of arrays sends nothing.
    Returns (table, total elements, chunk, chunks, blocks)."""
    n = len(arrays)
    addresses = np.fromiter((a.data.ptr for a in arrays), np.int64, n)
    sizes = np.fromiter((a.size for a in arrays), np.int64, n)
    total = int(sizes.sum())
    chunk, chunks, blocks = _geometry(total, itemsize, max_blocks)
    key = (device, chunk, addresses.tobytes(), sizes.tobytes())
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is not None:
            _TABLES.move_to_end(key)
            return table, total, chunk, chunks, blocks
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    starts = np.arange(chunks, dtype=np.int64) * chunk
    first = np.searchsorted(offsets[:-1], starts, side="right").astype(np.int64) - 1
    table = _cupy().asarray(np.concatenate([addresses, offsets, first]))
    with _TABLES_LOCK:
        _TABLES[key] = table
        if len(_TABLES) > TABLES_KEPT:
            _TABLES.popitem(last=False)
    return table, total, chunk, chunks, blocks


def _plan_multi_copy(arrays, flat, to_flat, source, target, op, scale, device):
    """The launch of multi_copy<source, target, op> between `arrays` and `flat` (checked)."""
    if not arrays:
        return _nothing
    name = f"multi_copy<{C_TYPES[source]}, {C_TYPES[target]}, {op}>"
    table, total, chunk, chunks, blocks = _table(arrays, max(source.itemsize, target.itemsize), device,
                                                 _max_blocks("pack.cu", name, device))
    if not total:
        return _nothing
    kernel = _function("pack.cu", name, device)
    args = (table, np.int32(len(arrays)), np.int64(chunks), np.int64(chunk), flat,
            np.int32(to_flat), np.float64(scale))
    return functools.partial(_launch_holding, functools.partial(kernel, (blocks,), (THREADS,), args),
                             tuple(arrays))


def _launch_holding(launch, arrays):
    """launch(); `arrays` rides along because the kernel's table holds only their raw
    addresses: a plan kept after its caller dropped the arrays must not write into freed
    memory."""
    launch()


def _check_all(what, arrays, flat, flat_name, device, flat_dtypes=C_TYPES, dtypes=C_TYPES):
    _check(what, flat_name, flat, device, flat_dtypes)
    for i, array in enumerate(arrays):
        _check(what, f"arrays[{i}]", array, device, dtypes)


def plan_pack(arrays, bucket):
    """Check once; return a function launching pack(arrays, bucket)."""
    device = _cupy().cuda.runtime.getDevice()
    _check_all("pack", arrays, bucket, "bucket", device)
    reference.check_layout("pack", arrays, bucket, "bucket", bucket.dtype)
    t = C_TYPES[bucket.dtype]
    return _plan_multi_copy(arrays, bucket, True, bucket.dtype, bucket.dtype, f"Copy<{t}>", 1.0, device)


def pack(arrays, bucket):
    """Copy every array into the 1-D bucket, in order, in ONE launch; returns bucket.
    Cost: one read and one write of every element, plus the table upload for a new list
    of arrays; the host checks each array (microseconds per array)."""
    plan_pack(arrays, bucket)()
    return bucket


def plan_unpack(bucket, arrays, scale=1.0):
    """Check once; return a function launching unpack(bucket, arrays, scale)."""
    device = _cupy().cuda.runtime.getDevice()
    _check_all("unpack", arrays, bucket, "bucket", device)
    reference.check_layout("unpack", arrays, bucket, "bucket", bucket.dtype)
    reference.check_scale("unpack", bucket.dtype, scale)
    t = C_TYPES[bucket.dtype]
    op = f"Copy<{t}>" if scale == 1.0 else f"Scale<{t}, {t}>"
    # the product is taken in the data's own type, as NumPy does: round the scale to it
    return _plan_multi_copy(arrays, bucket, False, bucket.dtype, bucket.dtype, op,
                            float(bucket.dtype.type(scale)), device)


def unpack(bucket, arrays, scale=1.0):
    """Copy consecutive pieces of the bucket into the arrays, times `scale` (fused), in ONE
    launch; returns arrays. Cost: as pack."""
    plan_unpack(bucket, arrays, scale)()
    return arrays


def plan_unpack_fp16(wire, arrays, scale=1.0):
    """Check once; return a function launching unpack_fp16(wire, arrays, scale)."""
    device = _cupy().cuda.runtime.getDevice()
    _check_all("unpack_fp16", arrays, wire, "wire buffer", device, [F16], [F32])
    reference.check_layout("unpack_fp16", arrays, wire, "wire buffer", F32)
    op = "Convert<f16, float>" if scale == 1.0 else "Scale<f16, float>"
    return _plan_multi_copy(arrays, wire, False, F16, F32, op, float(np.float32(scale)), device)


def unpack_fp16(wire, arrays, scale=1.0):
    """float32 arrays = float32(wire piece) * scale, in pack order, in ONE launch; returns
    arrays. Cost: reads 2 and writes 4 bytes per element."""
    plan_unpack_fp16(wire, arrays, scale)()
    return arrays


# ---- compress_fp16 -------------------------------------------------------------------
def plan_compress_fp16(bucket, wire, scale=1.0):
    """Check once; return a function launching compress_fp16(bucket, wire, scale)."""
    device = _cupy().cuda.runtime.getDevice()
    _check("compress_fp16", "bucket", bucket, device, [F32])
    _check("compress_fp16", "wire", wire, device, [F16])
    reference.check_compress(bucket, wire)
    if not bucket.size:
        return _nothing
    op = "Convert<float, f16>" if scale == 1.0 else "Scale<float, f16>"
    name = f"convert<float, f16, {op}>"
    chunk, _, blocks = _geometry(bucket.size, 4, _max_blocks("compress.cu", name, device))
    kernel = _function("compress.cu", name, device)
    args = (wire, bucket, np.int64(bucket.size), np.int64(chunk), np.float64(np.float32(scale)))
    return functools.partial(kernel, (blocks,), (THREADS,), args)


def compress_fp16(bucket, wire, scale=1.0):
    """wire = float16(bucket * scale) for a float32 bucket, in one launch; returns wire.
    Cost: reads 4 and writes 2 bytes per element."""
    plan_compress_fp16(bucket, wire, scale)()
    return wire


# ---- for benchmarks --------------------------------------------------------------------
def busy_wait(seconds):
    """Keep the current stream busy for `seconds` (one thread spinning on the GPU clock),
    so that launches queued meanwhile then run back to back. Cost: no host time."""
    device = _cupy().cuda.runtime.getDevice()
    _function("timing.cu", "busy_wait", device)((1,), (1,), (np.int64(seconds * 1e9),))
