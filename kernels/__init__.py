"""On-device and on-host kernels: one Python entry point per kernel.

Each entry point picks the CUDA implementation for CuPy arrays and the NumPy twin
(`kernels.reference`) for NumPy arrays.
"""
import numpy as np

from . import reference


def _impl(*arrays):
    """kernels.cuda for CuPy arrays, kernels.reference for NumPy ones (never mixed)."""
    kinds = {isinstance(a, np.ndarray) for a in arrays}
    if len(kinds) > 1:
        raise TypeError("kernels take all NumPy or all CuPy arrays, not a mix")
    if kinds == {False}:
        from . import cuda
        return cuda
    return reference

__all__ = ["reduce_into", "pack", "unpack", "compress_fp16", "unpack_fp16"]


def reduce_into(dst, src, op, reverse=False):
    """dst = dst <op> src, element-wise, in place; returns dst.

    With reverse=True: dst = src <op> dst (the collectives use it to combine a pair's data
    in one canonical order, so that results are bitwise equal on both sides even for max/min
    of signed zeros and NaN payloads).
    op is one of "sum", "prod", "max", "min". dst and src have the same shape and dtype.
    Cost: one read of dst and src, one write of dst.
    """
    return _impl(dst, src).reduce_into(dst, src, op, reverse)


def pack(arrays, bucket):
    """Copy many arrays into one flat bucket, in order; returns bucket.
    Cost: one read and one write of every element."""
    return _impl(*arrays, bucket).pack(arrays, bucket)


def unpack(bucket, arrays, scale=1.0):
    """Copy the bucket back into the arrays with the scale fused in (1/world averages)."""
    return _impl(bucket, *arrays).unpack(bucket, arrays, scale)


def compress_fp16(bucket, wire, scale=1.0):
    """float32 bucket -> float16 wire buffer, times scale (gradient compression)."""
    return _impl(bucket, wire).compress_fp16(bucket, wire, scale)


def unpack_fp16(wire, arrays, scale=1.0):
    """float16 wire buffer -> float32 arrays, times scale, in pack order."""
    return _impl(wire, *arrays).unpack_fp16(wire, arrays, scale)
