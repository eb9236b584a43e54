"""The NumPy kernels (the CPU path, and the GPU kernels' reference) against plain Python
loops, on random inputs of every layout and dtype; and the checks both paths share."""
import numpy as np
import pytest

import kernels

DTYPES = ["float16", "float32", "float64", "int32", "int64"]
LAYOUTS = {"one array": [(1000,)], "1000 tiny arrays": [(1,)] * 700 + [(2,)] * 200 + [(3,)] * 100,
           "odd sizes": [(3, 5), (7,), (1, 1, 13), (0,), (11, 2), (1,)], "empty arrays": [(0,), (0, 3)],
           "no arrays": []}


def arrays_of(layout, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * 50).astype(dtype) for shape in layout]


def flat_loop(arrays):
    """Every element of every array, in order, by a plain loop."""
    return [value for a in arrays for value in a.ravel().tolist()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pack_writes_the_arrays_in_order_and_nothing_else(dtype, layout):
    arrays = arrays_of(LAYOUTS[layout], dtype)
    total = sum(a.size for a in arrays)
    bucket = np.full(total + 3, 99, dtype)                      # poisoned, and longer than needed
    assert kernels.pack(arrays, bucket) is bucket
    assert bucket[:total].tolist() == flat_loop(arrays)
    assert bucket[total:].tolist() == [99, 99, 99]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_unpack_scales_each_element_in_the_arrays_own_type(dtype, layout):
    shapes = LAYOUTS[layout]
    total = sum(int(np.prod(s)) for s in shapes)
    bucket = arrays_of([(total + 2,)], dtype, seed=1)[0]
    scale = 1 / 3 if np.dtype(dtype).kind == "f" else 1.0
    outs = [np.full(shape, 7, dtype) for shape in shapes]
    assert kernels.unpack(bucket, outs, scale=scale) is outs
    kind = np.dtype(dtype).type
    expected = [kind(kind(v) * kind(scale)) if scale != 1.0 else kind(v) for v in bucket[:total].tolist()]
    assert flat_loop(outs) == [float(e) if np.dtype(dtype).kind == "f" else int(e) for e in expected]


def test_pack_then_unpack_round_trips_views_and_strided_arrays():
    base = np.arange(40, dtype=np.float32).reshape(4, 10)
    arrays = [base[:, ::3], base[1:3, 2:5], base.T]            # the CPU path accepts strides
    bucket = kernels.pack(arrays, np.empty(sum(a.size for a in arrays), np.float32))
    outs = [np.zeros(a.shape, np.float32) for a in arrays]
    kernels.unpack(bucket, outs)
    for a, out in zip(arrays, outs):
        assert np.array_equal(a, out)


@pytest.mark.parametrize("scale", [1.0, 0.125, 1 / 3])
def test_compress_fp16_rounds_the_float32_product_once(scale):
    rng = np.random.default_rng(2)
    bucket = np.concatenate([rng.standard_normal(997) * 100, [1e6, -1e5, 1e-7, -0.0, np.inf]]).astype(np.float32)
    wire = np.full(bucket.size, 9, np.float16)
    assert kernels.compress_fp16(bucket, wire, scale=scale) is wire
    s = np.float32(scale)
    with np.errstate(over="ignore"):
        expected = [np.float16(v if scale == 1.0 else np.float32(v) * s) for v in bucket.tolist()]
    assert wire.tobytes() == np.array(expected, np.float16).tobytes()
    assert np.isinf(wire[997]) and np.signbit(wire[1000])       # overflow to inf, -0.0 kept


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("scale", [1.0, 0.25, 1 / 3])
def test_unpack_fp16_restores_float32_arrays_in_pack_order(layout, scale):
    shapes = LAYOUTS[layout]
    total = sum(int(np.prod(s)) for s in shapes)
    wire = arrays_of([(total + 1,)], "float16", seed=3)[0]
    outs = [np.full(shape, np.nan, np.float32) for shape in shapes]
    assert kernels.unpack_fp16(wire, outs, scale=scale) is outs
    s = np.float32(scale)
    expected = [float(np.float32(v) * s) for v in wire[:total].tolist()]
    assert flat_loop(outs) == expected


@pytest.mark.parametrize("dtype", DTYPES + ["int8", "int16", "uint8"])
@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
@pytest.mark.parametrize("reverse", [False, True])
def test_reduce_into_matches_a_loop_for_every_dtype(dtype, op, reverse):
    rng = np.random.default_rng(4)
    dst = (rng.standard_normal(301) * 20).astype(dtype)
    src = (rng.standard_normal(301) * 20).astype(dtype)
    scalar = {"sum": lambda a, b: a + b, "prod": lambda a, b: a * b,
              "max": lambda a, b: max(a, b), "min": lambda a, b: min(a, b)}[op]
    with np.errstate(over="ignore"):
        expected = [scalar(b, a) if reverse else scalar(a, b) for a, b in zip(dst.tolist(), src.tolist())]
        expected = np.array(expected).astype(dtype)             # integers wrap around as in NumPy
    assert kernels.reduce_into(dst, src, op, reverse=reverse) is dst
    assert dst.tobytes() == expected.tobytes()


def test_integer_sums_and_products_wrap_around():
    dst = np.array([2**31 - 1, 2**30], np.int32)
    kernels.reduce_into(dst, np.array([1, 4], np.int32), "sum")
    assert dst.tolist() == [-2**31, 2**30 + 4]
    kernels.reduce_into(dst, np.array([1, 4], np.int32), "prod")
    assert dst.tolist() == [-2**31, 16]


def test_reduce_into_reverse_puts_src_first():
    dst, src = np.array([0.0]), np.array([-0.0])
    kernels.reduce_into(dst, src, "max", reverse=True)           # max(-0.0, 0.0)
    assert np.signbit(dst[0]) == np.signbit(np.maximum(-0.0, 0.0))


@pytest.mark.parametrize("dtype, tie_keeps_first", [("float16", True), ("float32", False), ("float64", False)])
def test_numpy_max_min_rules_that_reduce_cu_copies(dtype, tie_keeps_first):
    """kernels/reduce.cu returns the operand NumPy returns; if this fails, NumPy changed
    its rules and the Max/Min structs there (and this table) must follow."""
    for n in (1, 64):                                              # scalar and SIMD loops
        zero, negative = np.zeros(n, dtype), -np.zeros(n, dtype)
        for ufunc in (np.maximum, np.minimum):
            assert np.signbit(ufunc(negative, zero)[0]) == tie_keeps_first
            assert np.signbit(ufunc(zero, negative)[0]) != tie_keeps_first
        first, second = np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
        second.view(f"u{np.dtype(dtype).itemsize}")[:] |= 1       # a different NaN payload
        assert np.maximum(first, second).tobytes() == first.tobytes()
        assert np.minimum(np.ones(n, dtype), second).tobytes() == second.tobytes()


def test_bucket_views_are_the_bucket_in_pack_order():
    bucket = np.zeros(20, np.float32)
    views = kernels.bucket_views(bucket, [(2, 3), (4,), (0,), (5, 1)])
    assert [v.shape for v in views] == [(2, 3), (4,), (0,), (5, 1)]
    assert all(np.shares_memory(v, bucket) for v in views if v.size)
    views[1][...] = 7                                            # gradients written in place...
    assert bucket[6:10].tolist() == [7] * 4
    assert kernels.pack(views, bucket) is bucket                 # ...make pack a no-op copy
    assert bucket[6:10].tolist() == [7] * 4 and bucket[:6].tolist() == [0] * 6


def test_bucket_views_refuse_a_bucket_that_is_too_small():
    with pytest.raises(ValueError, match="need 7 elements"):
        kernels.bucket_views(np.zeros(6), [(3,), (4,)])


@pytest.mark.parametrize("call, error, message", [
    (lambda: kernels.pack([np.ones(5)], np.ones(3)), ValueError, "at least 5 elements"),
    (lambda: kernels.pack([np.ones(2, np.float32)], np.ones(3)), TypeError, "arrays.0. has dtype float32"),
    (lambda: kernels.pack([np.ones(2)], np.ones((2, 2))), ValueError, "must be 1-D"),
    (lambda: kernels.unpack(np.ones(3, np.int32), [np.ones(3, np.int32)], 0.5), TypeError, "floating-point"),
    (lambda: kernels.compress_fp16(np.ones(3), np.ones(3, np.float16)), TypeError, "float32 bucket"),
    (lambda: kernels.compress_fp16(np.ones(3, np.float32), np.ones(4, np.float16)), ValueError, "must be equal"),
    (lambda: kernels.unpack_fp16(np.ones(3, np.float32), [np.ones(3, np.float32)]), TypeError, "float16 wire"),
    (lambda: kernels.unpack_fp16(np.ones(3, np.float16), [np.ones(3)]), TypeError, "must be float32"),
    (lambda: kernels.reduce_into(np.ones(3), np.ones(3), "avg"), ValueError, "unknown op 'avg'"),
    (lambda: kernels.reduce_into(np.ones(3), np.ones(1), "sum"), ValueError, "equal shapes"),
    (lambda: kernels.reduce_into(np.ones(3), np.ones(3, np.float32), "sum"), TypeError, "equal dtypes"),
    (lambda: kernels.reduce_into(np.ones(3), [1.0, 2.0, 3.0], "sum"), TypeError, "not a mix"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_are_refused_with_what_would_be_right(call, error, message):
    with pytest.raises(error, match=message):
        call()
