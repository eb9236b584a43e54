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


def _offsets(arrays):
    return np.concatenate([[0], np.cumsum([a.size for a in arrays])]).astype(np.int64)


def pack(arrays, bucket):
    """Copy `arrays` (any shapes, bucket's dtype) one after another into the flat `bucket`;
    returns bucket. Cost: one read and one write of every element."""
    offsets = _offsets(arrays)
    for array, start, end in zip(arrays, offsets[:-1], offsets[1:]):
        bucket[start:end] = array.reshape(-1)
    return bucket


def _scatter(flat, arrays, scale):
    """Consecutive pieces of `flat` into `arrays`, times `scale` computed in each array's
    own precision (float32 for the fp16 wire, as the CUDA kernel does)."""
    offsets = _offsets(arrays)
    for array, start, end in zip(arrays, offsets[:-1], offsets[1:]):
        piece = flat[start:end].reshape(array.shape)
        if scale == 1.0:
            array[...] = piece
        else:
            np.multiply(piece, array.dtype.type(scale), out=array, casting="unsafe")
    return arrays


def unpack(bucket, arrays, scale=1.0):
    """Copy consecutive pieces of `bucket` back into `arrays`, times `scale`, in place."""
    if scale != 1.0 and bucket.dtype.kind != "f":
        raise TypeError(f"unpack with a scale needs a floating-point bucket, got {bucket.dtype}")
    return _scatter(bucket, arrays, scale)


def compress_fp16(bucket, wire, scale=1.0):
    """wire = float16(bucket * scale): the half-precision wire copy of a float32 bucket."""
    if scale == 1.0:
        wire[...] = bucket
    else:
        np.multiply(bucket, scale, out=wire, casting="unsafe")
    return wire


def unpack_fp16(wire, arrays, scale=1.0):
    """Restore float32 `arrays` from the float16 `wire` buffer (times `scale`), in pack order."""
    return _scatter(wire, arrays, scale)
