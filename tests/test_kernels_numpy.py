"""The NumPy kernels (the CPU path and the GPU kernels' reference) against plain loops."""
import numpy as np
import pytest

import kernels

DTYPES = ["float16", "float32", "float64", "int32", "int64"]
LAYOUTS = {"one array": [(1000,)], "1000 tiny arrays": [(1,)] * 700 + [(2,)] * 300,
           "odd sizes": [(3, 5), (7,), (1, 1, 13), (0,), (11, 2)], "empty": [(0,), (0, 3)]}


def arrays_of(layout, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * 50).astype(dtype) for shape in layout]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pack_then_unpack_with_scale(dtype, layout):
    arrays = arrays_of(LAYOUTS[layout], dtype)
    total = sum(a.size for a in arrays)
    bucket = np.full(total + 3, 99, dtype)                      # poisoned, and longer than needed
    kernels.pack(arrays, bucket)
    expected, position = bucket.copy(), 0
    for a in arrays:                                             # the plain loop
        for value in a.ravel():
            expected[position] = value
            position += 1
    assert np.array_equal(bucket, expected) and np.all(bucket[total:] == 99)
    outs = [np.full_like(a, 7) for a in arrays]
    scale = 0.5 if np.dtype(dtype).kind == "f" else 1.0
    kernels.unpack(bucket, outs, scale=scale)
    for a, out in zip(arrays, outs):
        np.testing.assert_array_equal(out, (a * scale).astype(dtype))


def test_fp16_round_trip_with_scale():
    arrays = arrays_of(LAYOUTS["odd sizes"], "float32")
    bucket = kernels.pack(arrays, np.empty(sum(a.size for a in arrays), np.float32))
    wire = kernels.compress_fp16(bucket, np.empty(bucket.size, np.float16), scale=0.25)
    assert wire.dtype == np.float16
    np.testing.assert_allclose(wire, bucket * 0.25, rtol=1e-3)
    outs = [np.zeros_like(a) for a in arrays]
    kernels.unpack_fp16(wire, outs, scale=4.0)
    for a, out in zip(arrays, outs):
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, a, rtol=1e-3)


@pytest.mark.parametrize("op, expected", [("sum", [5, 5]), ("prod", [6, 4]), ("max", [3, 4]), ("min", [2, 1])])
def test_reduce_into(op, expected):
    dst = np.array([2, 4], np.int32)
    assert kernels.reduce_into(dst, np.array([3, 1], np.int32), op) is dst
    assert dst.tolist() == expected


def test_reduce_into_reverse_puts_src_first():
    dst, src = np.array([0.0]), np.array([-0.0])
    kernels.reduce_into(dst, src, "max", reverse=True)           # max(-0.0, 0.0) keeps its first operand
    assert np.signbit(dst[0]) == np.signbit(np.maximum(-0.0, 0.0))
