"""Inputs with a known answer, and the reference results every algorithm is checked against."""
import numpy as np

FLOATS = ("float16", "float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8")
DTYPES = FLOATS + INTS
try:
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    BFLOAT16 = None
# the dtypes of issue 14, with the ops each reduces with ("avg" where floating)
NEW_DTYPE_OPS = {"bool": ("max", "min"), "uint16": ("sum", "prod", "max", "min"),
                 "uint32": ("sum", "prod", "max", "min"), "uint64": ("sum", "prod", "max", "min"),
                 "complex64": ("sum", "prod", "avg"), "complex128": ("sum", "prod", "avg")}
if BFLOAT16 is not None:
    NEW_DTYPE_OPS["bfloat16"] = ("sum", "prod", "max", "min", "avg")


def is_inexact(dtype):
    """Floats, complex and bfloat16: results compared within a rounding bound."""
    return dtype.kind in "fc" or dtype == BFLOAT16


def _finfo(dtype):
    return ml_dtypes.finfo(dtype) if dtype == BFLOAT16 else np.finfo(dtype)


def make_input(rank, count, dtype, op, seed=0):
    """Rank `rank`'s input: reproducible, and in a range where `op` stays meaningful."""
    rng = np.random.default_rng([seed, rank, count])
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(count) < 0.5
    if dtype.kind == "c":
        real = make_input(rank, count, "float64", op, seed)
        imag = make_input(rank, count, "float64", op, seed + 1)
        return (real + 1j * (imag if op != "prod" else imag - 1.0)).astype(dtype)
    if dtype == BFLOAT16:
        return make_input(rank, count, "float32", op, seed).astype(dtype)
    if dtype.kind == "f":
        if op == "prod":
            values = rng.uniform(0.7, 1.4, count)
        else:
            values = rng.standard_normal(count) * 4
    else:
        info = np.iinfo(dtype)
        values = rng.integers(max(info.min, -100), min(info.max, 100), count, endpoint=True)
    return values.astype(dtype)


def reduce_reference(inputs, op):
    """The reduction of `inputs` (one array per rank): float64 for floats (returned as
    float64); in the dtype itself for integers, whose wrap-around arithmetic is exact in
    any order."""
    dtype = inputs[0].dtype
    if dtype.kind == "f" or dtype == BFLOAT16:
        stack = np.stack([x.astype(np.float64) for x in inputs])
    elif dtype.kind == "c":
        stack = np.stack([x.astype(np.complex128) for x in inputs])
    else:
        stack = np.stack(inputs)
    if op in ("sum", "avg"):
        result = stack.sum(axis=0, dtype=stack.dtype)
        return result / len(inputs) if op == "avg" else result
    if op == "prod":
        return stack.prod(axis=0, dtype=stack.dtype)
    return stack.max(axis=0) if op == "max" else stack.min(axis=0)


def tolerance(inputs, op):
    """Elementwise error bound for a float result of `op` over `inputs` in any order."""
    dtype = inputs[0].dtype
    n = len(inputs)
    eps = float(_finfo(dtype).eps)
    wide = np.complex128 if dtype.kind == "c" else np.float64
    magnitude = np.sum([np.abs(x.astype(wide)) for x in inputs], axis=0)
    if op in ("max", "min"):
        return np.zeros_like(magnitude)
    if op == "prod":
        return (n + 1) * eps * np.abs(reduce_reference(inputs, op)) * (2 if dtype.kind == "c" else 1) \
            + float(_finfo(dtype).tiny)
    bound = (n + 1) * eps * magnitude
    return bound / n if op == "avg" else bound


def assert_matches(got, inputs, op, what=""):
    """Assert `got` equals the reference of `inputs` under `op` (exactly for integers and
    max/min, within the rounding bound for float sums, products and averages)."""
    expected = reduce_reference(inputs, op)
    got = np.asarray(got)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    if not is_inexact(got.dtype):
        np.testing.assert_array_equal(got, expected, err_msg=what)
        return
    error = np.abs(got.astype(np.complex128 if got.dtype.kind == "c" else np.float64) - expected)
    bound = tolerance(inputs, op)
    bad = np.flatnonzero(error > bound)
    assert bad.size == 0, (f"{what}: {bad.size} elements off, e.g. index {bad[0]}: "
                           f"got {got[bad[0]]}, expected {expected[bad[0]]}, bound {bound[bad[0]]}")
