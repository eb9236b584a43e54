"""On-device and on-host kernels: one Python entry point per kernel.

Each entry point picks the CUDA implementation for CuPy arrays and the NumPy twin
(`kernels.reference`) for NumPy arrays.
"""
from . import reference

__all__ = ["reduce_into"]


def reduce_into(dst, src, op, reverse=False):
    """dst = dst <op> src, element-wise, in place; returns dst.

    With reverse=True: dst = src <op> dst (the collectives use it to combine a pair's data
    in one canonical order, so that results are bitwise equal on both sides even for max/min
    of signed zeros and NaN payloads).
    op is one of "sum", "prod", "max", "min". dst and src have the same shape and dtype.
    Cost: one read of dst and src, one write of dst.
    """
    return reference.reduce_into(dst, src, op, reverse)
