"""Everything about user buffers in one place: what is accepted, how it is viewed flat,
and where results go. NumPy arrays today; CuPy arrays extend the checks here."""
import numpy as np

from .ops import check_dtype


def array_module(x):
    """numpy for NumPy arrays, cupy for CuPy arrays (cupy is imported only if x is one)."""
    if isinstance(x, np.ndarray):
        return np
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        import cupy
        return cupy
    return None


def check_array(x, name="x", writeable=False):
    """Raise TypeError/ValueError unless `x` is a buffer the engine can use.

    A buffer is a C-contiguous ndarray of a supported dtype; `writeable` also requires
    that it may be written in place.
    """
    if array_module(x) is None:
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}: "
                        f"wrap it with numpy.asarray({name})")
    check_dtype(x.dtype)
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got strides {x.strides} for shape "
                         f"{x.shape}): pass numpy.ascontiguousarray({name})")
    if writeable and not x.flags.writeable:
        raise ValueError(f"{name} is read-only but is written in place: pass a writeable "
                         f"copy, or give out=")


def check_out(out, x, shape, name="out"):
    """Raise unless `out` can receive a result of `shape` with x's dtype and array module."""
    check_array(out, name, writeable=True)
    if array_module(out) is not array_module(x):
        raise TypeError(f"{name} is a {array_module(out).__name__} array but x is a "
                        f"{array_module(x).__name__} array: use the same kind for both")
    if out.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {out.dtype} but x has dtype {x.dtype}: they must match")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}, expected {tuple(shape)}")


def flat(x):
    """1-D view of a C-contiguous array (no copy)."""
    return x.reshape(-1)


def empty(shape, like):
    """An uninitialised array of `shape` with like's dtype and array module."""
    return np.empty_like(like, shape=shape)
