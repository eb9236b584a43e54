"""Reduction operators and the data types the engine moves.

Dtypes: float16/32/64, bfloat16 (with ml_dtypes; every reduction step computes in float32
and rounds once), int8/16/32/64, uint8/16/32/64 (all ops but "avg"), complex64/128
("sum", "prod", "avg"; no order, so no "max"/"min"), and bool ("max" is logical or,
"min" logical and; nothing else). Any dtype moves through the data-movement
collectives.

An op is named by a string ("sum", "prod", "max", "min", "avg") or by the constants
`SUM`, `PROD`, `MAX`, `MIN`, `AVG` (which are those strings). "avg" is carried out as
"sum" followed by one division by the world size, done by whoever holds the final sum,
so every rank still gets bitwise-identical results. For 2-byte floats (float16,
bfloat16), whose sum overflows long before their mean does, "avg" divides before
summing and accumulates wider: each rank's values are converted to float32 and divided
by the world size, the float32 values are summed, and the result is rounded to the
dtype once at the end (twice the bytes of a float16 sum on the wire). A mean that the
dtype can represent is therefore never inf.
"""
import numpy as np

SUM, PROD, MAX, MIN, AVG = "sum", "prod", "max", "min", "avg"
OPS = (SUM, PROD, MAX, MIN, AVG)

try:                                    # bfloat16 (JAX's NumPy type) when ml_dtypes is installed
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    BFLOAT16 = None

DTYPES = tuple(np.dtype(name) for name in
               ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                "uint16", "uint32", "uint64", "bool", "complex64", "complex128")
               ) + ((BFLOAT16,) if BFLOAT16 is not None else ())


def is_floating(dtype):
    """True for real floating-point dtypes, bfloat16 included (NumPy calls its kind 'V')."""
    return dtype.kind == "f" or (BFLOAT16 is not None and dtype == BFLOAT16)


def check_op(op, dtype):
    """Return the validated op name for `dtype`, or raise ValueError/TypeError saying why not."""
    if not isinstance(op, str) or op not in OPS:
        raise ValueError(f"unknown op {op!r}: valid ops are {', '.join(map(repr, OPS))}")
    if dtype.kind == "b" and op not in (MAX, MIN):
        raise TypeError(f"bool reduces with 'max' (logical or) and 'min' (logical and), not {op!r}")
    if dtype.kind == "c" and op in (MAX, MIN):
        raise TypeError(f"op {op!r} is undefined for {dtype}: complex numbers have no order "
                        "(as in MPI); use 'sum', 'prod' or 'avg'")
    if op == AVG and not (is_floating(dtype) or dtype.kind == "c"):
        raise TypeError(f"op 'avg' needs a floating-point dtype, got {dtype}: "
                        "use 'sum' and divide yourself for integers")
    return op


def check_dtype(dtype):
    """Raise TypeError unless `dtype` is one the engine moves."""
    if dtype not in DTYPES:
        raise TypeError(f"unsupported dtype {dtype}: supported dtypes are "
                        f"{', '.join(str(d) for d in DTYPES)}")


def combine_op(op):
    """The element-wise op that reduction steps apply (the "sum" behind "avg")."""
    return SUM if op == AVG else op


def wide_avg(op, dtype):
    """True when op "avg" on `dtype` runs in float32 (2-byte floats: see the module doc)."""
    return op == AVG and dtype.itemsize == 2 and (dtype.kind == "f" or dtype.name == "bfloat16")


def finish_avg(block, op, world_size):
    """Divide `block` by the world size in place if op is "avg" (one pass, on the final sum)."""
    if op == AVG and world_size > 1 and block.size:
        np.true_divide(block, world_size, out=block, casting="unsafe")


def identity(op, dtype):
    """The value x with x <op> y == y for every y of `dtype` (0, 1, lowest or highest)."""
    dtype = np.dtype(dtype)
    if op in (SUM, AVG):
        return dtype.type(0)
    if op == PROD:
        return dtype.type(1)
    if dtype.kind == "b":
        return dtype.type(op == MIN)
    if is_floating(dtype):
        return dtype.type(-np.inf if op == MAX else np.inf)
    info = np.iinfo(dtype)
    return dtype.type(info.min if op == MAX else info.max)
