"""Everything about user buffers in one place: what is accepted (NumPy arrays on the
host, CuPy arrays on this rank's GPU, and any array that exports DLPack or the array
interface, seen as one of those), how it is viewed flat, where results go, and how a
rank picks its GPU."""
import os
from typing import Any

import numpy as np

import kernels
from kernels.arrays import array_module

from .ops import check_dtype

# What the collectives take and return: a numpy.ndarray, or a cupy.ndarray on this rank's GPU.
Array = Any

# dtypes the CUDA reduction kernel is instantiated for; data movement takes any dtype
DEVICE_REDUCE_DTYPES = kernels.DEVICE_DTYPES


_DTYPE_NAMES = {}


def dtype_name(dtype):
    """str(dtype), cached: NumPy builds the string anew on every call (microseconds, on
    the per-call path of every collective)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


# DLPack device types (dlpack.h): host memory, CUDA memory, CUDA managed memory
_DLPACK_CPU, _DLPACK_CUDA, _DLPACK_CUDA_MANAGED = 1, 2, 13


def as_array(x):
    """x itself when it is a NumPy or CuPy array (or None); otherwise a view of the same
    memory for any object that exports DLPack (a PyTorch tensor, a JAX array) or the
    array interface: NumPy for host memory, CuPy for CUDA memory. No copy, so a
    collective that writes in place writes into the caller's tensor. Anything else is
    returned as is, for check_array to name."""
    if x is None or type(x) is np.ndarray or array_module(x) is not None:
        return x
    if hasattr(x, "__dlpack_device__"):
        device = x.__dlpack_device__()[0]
        if device == _DLPACK_CPU:
            return np.from_dlpack(x)
        if device in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED):
            import cupy
            return cupy.from_dlpack(x)
    if hasattr(x, "__array_interface__"):
        return np.asarray(x)
    if hasattr(x, "__cuda_array_interface__"):
        import cupy
        return cupy.asarray(x)
    return x


def is_device(x):
    """True for a CuPy (GPU) array."""
    return array_module(x) is not np and array_module(x) is not None


def check_array(x, name="x", writeable=False, reduces=False):
    """Raise TypeError/ValueError unless `x` is a buffer the engine can use.

    A buffer is a C-contiguous ndarray (NumPy, or CuPy on this rank's current GPU) of a
    supported dtype; `writeable` also requires that it may be written in place, and
    `reduces` that the device reduction kernel handles its dtype.
    """
    if array_module(x) is None:
        raise TypeError(f"{name} must be a numpy.ndarray (or cupy.ndarray), got "
                        f"{type(x).__name__}: wrap it with numpy.asarray({name})")
    if isinstance(x, np.ndarray) and type(x) is not np.ndarray:
        raise TypeError(f"{name} is a {type(x).__module__}.{type(x).__name__}, a numpy.ndarray "
                        f"subclass, whose shape and indexing rules differ: pass "
                        f"numpy.asarray({name}) (the same memory, as a plain array)")
    check_dtype(x.dtype)
    if is_device(x):
        _check_device(x, name, reduces)
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got strides {x.strides} for shape "
                         f"{x.shape}): pass numpy.ascontiguousarray({name})")
    if writeable and not getattr(x.flags, "writeable", True):
        raise ValueError(f"{name} is read-only but is written in place: pass a writeable "
                         f"copy, or give out=")


def check_instance(x, device, name="x", writeable=False, reduces=False):
    """The checks of check_array that belong to the array object rather than to its type,
    dtype and shape (C-contiguous; writeable if `writeable`; on a GPU, on this rank's
    device), for an x of a kind that already passed check_array (`device`: it is a GPU
    array). Raises as check_array does. Per call on a host array: one flags lookup."""
    if device:
        check_array(x, name, writeable, reduces)
        return
    flags = x.flags
    if not flags.c_contiguous or (writeable and not flags.writeable):
        check_array(x, name, writeable, reduces)


def check_out(out, x, shape, name="out"):
    """Raise unless `out` can receive a result of `shape` with x's dtype and array module
    (x passed check_array). A NumPy out of the right dtype and shape costs one flags lookup."""
    if type(out) is np.ndarray and type(x) is np.ndarray and out.dtype == x.dtype and out.shape == tuple(shape):
        check_instance(out, False, name, writeable=True)
        return
    check_array(out, name, writeable=True)
    if array_module(out) is not array_module(x):
        raise TypeError(f"{name} is a {array_module(out).__name__} array but x is a "
                        f"{array_module(x).__name__} array: use the same kind for both")
    if out.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {out.dtype} but x has dtype {x.dtype}: they must match")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}, expected {tuple(shape)}")


def _check_device(x, name, reduces):
    import cupy
    current = cupy.cuda.runtime.getDevice()
    if x.device.id != current:
        raise ValueError(f"{name} lives on GPU {x.device.id} but this rank uses GPU {current}: "
                         f"move it with cupy.asarray({name}) under cupy.cuda.Device({current})")
    if reduces and x.dtype not in DEVICE_REDUCE_DTYPES:
        raise TypeError(f"reductions of {x.dtype} on the GPU are not supported: use one of "
                        f"{', '.join(str(d) for d in DEVICE_REDUCE_DTYPES)}")


def select_device(local_rank):
    """Make GPU (local_rank mod device count) current, if CuPy and a GPU are present.

    Several ranks on one node share GPUs round-robin. Returns the device id, or None when
    there is no GPU to use: no CuPy, driver or device, or a device that refuses this
    process (exclusive-process mode, busy): the rank then works on host buffers only,
    as a CPU-only job does, instead of failing at start-up.
    """
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
        if count == 0:
            return None
        device = local_rank % count
        cupy.cuda.Device(device).use()
    except Exception:
        return None
    return device


def cuda_aware_mpi(query=None):
    """Whether MPI takes device pointers: COLLECTIVES_CUDA_AWARE=1/0 forces the answer,
    else `query()` (the MPI library's own report) decides, else False."""
    forced = os.environ.get("COLLECTIVES_CUDA_AWARE", "").strip().lower()
    if forced:
        return forced in ("1", "true", "yes", "on")
    try:
        return bool(query()) if query is not None else False
    except Exception:
        return False


def flat(x):
    """1-D view of a C-contiguous array (no copy): x itself when it is 1-D already (a
    reshape costs a microsecond, on the path of every collective)."""
    return x if x.ndim == 1 else x.reshape(-1)


def empty(shape, like):
    """An uninitialised array of `shape` with like's dtype and array module."""
    return np.empty_like(like, shape=shape)
