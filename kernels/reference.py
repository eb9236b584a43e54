"""NumPy twins of the CUDA kernels: the CPU path, and the reference the GPU tests compare to."""
import numpy as np

_UFUNCS = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}


def reduce_into(dst, src, op, reverse=False):
    """dst = dst <op> src (reverse: src <op> dst) in place with a NumPy ufunc; returns dst."""
    if reverse:
        _UFUNCS[op](src, dst, out=dst)
    else:
        _UFUNCS[op](dst, src, out=dst)
    return dst
