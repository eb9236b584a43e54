"""NumPy twins of the CUDA kernels: the CPU path, and the reference the GPU tests compare to.

Each function has the signature of its entry point in `kernels` and the result of its
CUDA kernel, bit for bit: products with a scale are taken in the type the kernel uses
(the array's own type; float32 for the float16 wire), scale 1 is a plain copy or cast.
The argument checks (`check_*`) are shared with kernels.cuda, so both paths refuse the
same mistakes with the same messages. NumPy arrays need not be contiguous here.
"""
import numpy as np

_UFUNCS = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
FLOAT16, FLOAT32 = np.dtype("float16"), np.dtype("float32")


def check_reduce(dst, src, op):
    """ValueError/TypeError unless dst <op> src is well formed (same shape and dtype)."""
    if op not in _UFUNCS:
        raise ValueError(f"unknown op {op!r}: use one of {', '.join(_UFUNCS)}")
    if dst.shape != src.shape:
        raise ValueError(f"reduce_into needs equal shapes, got dst {dst.shape} and src {src.shape}")
    if dst.dtype != src.dtype:
        raise TypeError(f"reduce_into needs equal dtypes, got dst {dst.dtype} and src {src.dtype}")


def check_layout(what, arrays, flat, flat_name, dtype=None):
    """Checks that `arrays` fit one after another in the 1-D `flat` buffer and, with dtype,
    that every array has it; returns their total number of elements."""
    if flat.ndim != 1:
        raise ValueError(f"{what}: the {flat_name} must be 1-D (a flat buffer), got shape "
                         f"{flat.shape}; pass {flat_name}.reshape(-1)")
    total = 0
    for i, array in enumerate(arrays):
        if dtype is not None and array.dtype != dtype:
            whose = f" like the {flat_name}" if dtype == flat.dtype else ""
            raise TypeError(f"{what}: arrays[{i}] has dtype {array.dtype} but must be {dtype}"
                            f"{whose}; convert it with .astype('{dtype}')")
        total += array.size
    if total > flat.size:
        raise ValueError(f"{what}: the arrays hold {total} elements but the {flat_name} only "
                         f"{flat.size}; use a {flat_name} of at least {total} elements")
    return total


def check_scale(what, dtype, scale):
    """A scale other than 1 needs floating-point data (integers would silently truncate)."""
    if scale != 1.0 and dtype.kind != "f":
        raise TypeError(f"{what} with scale={scale} needs a floating-point bucket, got {dtype}; "
                        f"use scale=1.0 for integer data")


def check_compress(bucket, wire):
    """compress_fp16 takes a float32 bucket and a float16 wire buffer of the same shape."""
    if bucket.dtype != FLOAT32 or wire.dtype != FLOAT16:
        raise TypeError(f"compress_fp16 takes a float32 bucket and a float16 wire buffer, got "
                        f"{bucket.dtype} and {wire.dtype}")
    if wire.shape != bucket.shape:
        raise ValueError(f"compress_fp16: the wire buffer has shape {wire.shape}, the bucket "
                         f"{bucket.shape}; they must be equal")


def reduce_into(dst, src, op, reverse=False):
    """dst = dst <op> src (reverse: src <op> dst) in place with a NumPy ufunc; returns dst.
    Any NumPy dtype (int8, int16, uint8... too). Cost: one pass, no allocation."""
    ufunc = _UFUNCS.get(op)
    if ufunc is None or dst.shape != src.shape or dst.dtype != src.dtype:
        check_reduce(dst, src, op)
    if reverse:
        ufunc(src, dst, out=dst)
    else:
        ufunc(dst, src, out=dst)
    return dst


def combine_into(out, a, b, op):
    """out = a <op> b element-wise in one ufunc call; returns out. out may be a or b.
    Same result, bit for bit, as out[...] = a; reduce_into(out, b, op) (one pass fewer).
    Cost: one read of a and b, one write of out; no allocation."""
    ufunc = _UFUNCS.get(op)
    if ufunc is None or a.shape != b.shape or a.dtype != b.dtype:
        check_reduce(a, b, op)
    if out.shape != a.shape or out.dtype != a.dtype:
        check_reduce(out, a, op)
    ufunc(a, b, out=out)
    return out


def ufunc_chain(op):
    """A function chain(out, operands) -> out = operands[0] <op> operands[1] <op> ..., for
    NumPy arrays of out's shape and dtype, with the op's ufunc looked up once: the ufunc
    calls of combine_into then reduce_into per operand, bit for bit, without their per-call
    checks, for a caller that checked the operands when it bound them (the prepared
    shared-memory all-reduce, reduce-scatter and reduce, collectives/algorithms/shm.py).
    ValueError for an unknown op.
    Cost per call: n-1 ufunc calls, no allocation."""
    if op not in _UFUNCS:
        check_reduce(None, None, op)
    ufunc = _UFUNCS[op]

    def chain(out, operands):
        ufunc(operands[0], operands[1], out=out)
        for operand in operands[2:]:
            ufunc(out, operand, out=out)
        return out
    return chain


def _bounds(arrays):
    """(start, end) of each array in the flat buffer."""
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([a.size for a in arrays], out=offsets[1:])
    return zip(offsets[:-1].tolist(), offsets[1:].tolist())


def bucket_views(bucket, shapes):
    """Views of consecutive pieces of the 1-D `bucket`, one per shape, in pack order: arrays
    that live inside the bucket, so packing them costs nothing (the DDP engine lets
    gradients accumulate straight into them on the CPU). Works for NumPy and CuPy.
    Cost: no copy; one slice and reshape per shape."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if bucket.ndim != 1 or sum(sizes) > bucket.size:
        raise ValueError(f"bucket_views: the shapes need {sum(sizes)} elements of a 1-D bucket, "
                         f"got shape {bucket.shape}")
    views, start = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(bucket[start:start + size].reshape(shape))
        start += size
    return views


def pack(arrays, bucket):
    """Copy `arrays` (any shapes, the bucket's dtype) one after another into the 1-D
    `bucket`; returns bucket. Cost: one read and one write of every element."""
    check_layout("pack", arrays, bucket, "bucket", bucket.dtype)
    for array, (start, end) in zip(arrays, _bounds(arrays)):
        bucket[start:end] = array.reshape(-1)
    return bucket


def _scatter(flat, arrays, scale):
    """Consecutive pieces of `flat` into `arrays`, times `scale` in each array's own type
    (float32 for the fp16 wire, float16 times float16(scale) for float16: as the kernel)."""
    for array, (start, end) in zip(arrays, _bounds(arrays)):
        piece = flat[start:end].reshape(array.shape)
        if scale == 1.0:
            array[...] = piece
        else:
            np.multiply(piece, array.dtype.type(scale), out=array, casting="unsafe")
    return arrays


def unpack(bucket, arrays, scale=1.0):
    """Copy consecutive pieces of `bucket` back into `arrays`, times `scale` (fused: 1/world
    averages for free); returns arrays. Cost: one read and one write of every element."""
    check_layout("unpack", arrays, bucket, "bucket", bucket.dtype)
    check_scale("unpack", bucket.dtype, scale)
    return _scatter(bucket, arrays, scale)


def compress_fp16(bucket, wire, scale=1.0):
    """wire = float16(bucket * scale), the product in float32 and rounded once (to +-inf
    beyond float16's range, without a warning); returns wire. Cost: reads 4 and writes 2 bytes per element."""
    check_compress(bucket, wire)
    with np.errstate(over="ignore"):                     # beyond float16's range: inf, as on the GPU
        if scale == 1.0:
            wire[...] = bucket
        else:
            np.multiply(bucket, np.float32(scale), out=wire, casting="unsafe")
    return wire


def unpack_fp16(wire, arrays, scale=1.0):
    """float32 `arrays` = float32(wire piece) * scale, in pack order; returns arrays.
    Cost: reads 2 and writes 4 bytes per element."""
    if wire.dtype != FLOAT16:
        raise TypeError(f"unpack_fp16 takes a float16 wire buffer, got {wire.dtype}")
    check_layout("unpack_fp16", arrays, wire, "wire buffer", FLOAT32)
    return _scatter(wire, arrays, scale)
