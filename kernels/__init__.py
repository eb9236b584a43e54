"""On-device and on-host kernels: one Python entry point per kernel.

Each entry point runs the CUDA kernel (kernels/*.cu through kernels.cuda) for CuPy arrays
and its NumPy twin (kernels.reference) for NumPy arrays; CuPy is imported only when a
non-NumPy array arrives. Supported dtypes on the GPU: float16, float32, float64, int32,
int64 (reduce_into on the CPU takes any NumPy dtype). The CPU accepts strided arrays; the
GPU path refuses them with a ValueError, like arrays on another device.
"""
import numpy as np

from . import reference
from .reference import bucket_views

# The dtypes the CUDA kernels are instantiated for, in kernels/cuda.py's C_TYPES order (the
# one list: collectives.buffers refuses device reductions of any other dtype up front).
DEVICE_DTYPES = tuple(np.dtype(name) for name in ("float16", "float32", "float64", "int32", "int64"))

__all__ = ["DEVICE_DTYPES", "reduce_into", "pack", "unpack", "compress_fp16", "unpack_fp16", "bucket_views"]


def _impl(*arrays):
    """kernels.reference for NumPy arrays, kernels.cuda for anything else (never mixed)."""
    on_host = sum(isinstance(a, np.ndarray) for a in arrays)
    if on_host == len(arrays):
        return reference
    if on_host:
        kinds = ", ".join(type(a).__name__ for a in arrays)
        raise TypeError(f"kernels take all NumPy or all CuPy arrays, not a mix (got {kinds})")
    from . import cuda
    return cuda


def reduce_into(dst, src, op, reverse=False):
    """dst = dst <op> src, element-wise, in place; returns dst.

    With reverse=True: dst = src <op> dst (the collectives use it to combine a pair's data
    in one canonical order, so that results are bitwise equal on both sides even for max/min
    of signed zeros and NaN payloads).
    op is one of "sum", "prod", "max", "min". dst and src have the same shape and dtype.
    Cost: one read of dst and src, one write of dst; no allocation.
    """
    if type(dst) is np.ndarray and type(src) is np.ndarray:       # the collectives' hot path
        return reference.reduce_into(dst, src, op, reverse)
    return _impl(dst, src).reduce_into(dst, src, op, reverse)


def reduce_chain_into(out, operands, op):
    """out = operands[0] <op> operands[1] <op> ... <op> operands[n-1], in that order;
    returns out. `operands` is any iterable of n >= 2 arrays of out's shape and dtype,
    taken one at a time (a generator may wait for each). Bitwise the same as out[...] =
    operands[0] followed by reduce_into(out, operand, op) for each further one. out may be
    operands[0]; it must not overlap the others.
    Cost: n-1 passes, each reading two arrays of out's size and writing one (the first
    step combines two operands in one pass: no copy of operands[0]); no allocation."""
    operands = iter(operands)
    first, second = next(operands), next(operands)
    if type(out) is type(first) is type(second) is np.ndarray:     # the collectives' hot path
        impl = reference
        reference.combine_into(out, first, second, op)
    else:
        impl = _impl(out, first, second)
        if out is not first:
            out[...] = first
        impl.reduce_into(out, second, op)
    for operand in operands:
        impl.reduce_into(out, operand, op)
    return out


def pack(arrays, bucket):
    """Copy many arrays (any shapes and sizes, the bucket's dtype) one after another into
    the 1-D bucket; returns bucket. On the GPU: ONE launch whatever the number of arrays.
    Cost: one read and one write of every element."""
    return _impl(*arrays, bucket).pack(arrays, bucket)


def unpack(bucket, arrays, scale=1.0):
    """Copy consecutive pieces of the bucket back into the arrays times `scale`, fused
    (scale=1/world averages at no extra pass); returns arrays. Cost: as pack."""
    return _impl(bucket, *arrays).unpack(bucket, arrays, scale)


def compress_fp16(bucket, wire, scale=1.0):
    """wire[i] = float16(bucket[i] * scale) for a float32 bucket and a float16 wire buffer of
    the same shape (gradient compression); returns wire. Cost: reads 4, writes 2 bytes each."""
    return _impl(bucket, wire).compress_fp16(bucket, wire, scale)


def unpack_fp16(wire, arrays, scale=1.0):
    """float32 arrays = float32(wire piece) * scale, consecutive pieces in pack order; on the
    GPU in ONE launch; returns arrays. Cost: reads 2, writes 4 bytes per element."""
    return _impl(wire, *arrays).unpack_fp16(wire, arrays, scale)
