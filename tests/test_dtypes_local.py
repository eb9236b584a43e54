"""The dtypes of issue 14 (bool, uint16/32/64, complex64/128, bfloat16) through every
algorithm of every collective on the in-process transport: results against the
reference, bitwise equal on all ranks where a reduction happens, and the ops each dtype
refuses."""
import numpy as np
import pytest

import collectives as cc
import kernels
from tests.reference import BFLOAT16, NEW_DTYPE_OPS, assert_matches, make_input

SIZE, COUNT = 5, 23
CASES = [(dtype, op) for dtype, ops in NEW_DTYPE_OPS.items() for op in ops]
REDUCTIONS = ("allreduce", "reduce_scatter", "reduce", "scan", "exscan")


def algorithms(collective):
    return cc.run_threads(1, lambda comm: comm.algorithms(collective))[0]


def run(fn, size=SIZE):
    return cc.run_threads(size, fn, timeout=20)


def same_bits(results, what):
    for rank, result in enumerate(results[1:], 1):
        assert result.tobytes() == results[0].tobytes(), f"{what}: rank {rank} differs from rank 0"


@pytest.mark.parametrize("dtype, op", CASES)
@pytest.mark.parametrize("algorithm", algorithms("allreduce"))
def test_allreduce_of_new_dtypes(dtype, op, algorithm):
    inputs = [make_input(r, COUNT, dtype, op) for r in range(SIZE)]
    results = run(lambda comm: comm.allreduce(inputs[comm.rank].copy(), op, algorithm=algorithm))
    for result in results:
        assert result.dtype == np.dtype(dtype)
        assert_matches(result, inputs, op, f"allreduce {algorithm} {dtype} {op}")
    same_bits(results, f"allreduce {algorithm} {dtype} {op}")


@pytest.mark.parametrize("dtype, op", CASES)
def test_reduce_scatter_reduce_and_scans_of_new_dtypes(dtype, op):
    inputs = [make_input(r, COUNT, dtype, op) for r in range(SIZE)]
    offsets = cc.partition(COUNT, SIZE)

    def body(comm):
        x = inputs[comm.rank]
        got = {("reduce_scatter", a): comm.reduce_scatter(x, op, algorithm=a)
               for a in comm.algorithms("reduce_scatter")}
        got.update({("reduce", a): comm.reduce(x.copy(), op, 2, algorithm=a) for a in comm.algorithms("reduce")})
        if op != "avg":
            got.update({(c, a): getattr(comm, c)(x.copy(), op, algorithm=a)
                        for c in ("scan", "exscan") for a in comm.algorithms(c)})
        return got
    results = run(body)
    for r, got in enumerate(results):
        for (collective, algorithm), result in got.items():
            what = f"{collective} {algorithm} {dtype} {op} rank {r}"
            if collective == "reduce_scatter":
                assert_matches(result, [x[offsets[r]:offsets[r + 1]] for x in inputs], op, what)
            elif collective == "reduce":
                assert (result is None) == (r != 2), what
                if r == 2:
                    assert_matches(result, inputs, op, what)
            elif collective == "scan" or r > 0:
                assert_matches(result, inputs[:r + 1 if collective == "scan" else r], op, what)


@pytest.mark.parametrize("dtype", list(NEW_DTYPE_OPS))
def test_new_dtypes_move_bitwise_through_every_data_movement_algorithm(dtype):
    inputs = [make_input(r, COUNT, dtype, "sum") for r in range(SIZE)]

    def body(comm):
        x, got = inputs[comm.rank], {}
        for a in comm.algorithms("allgather"):
            got["allgather", a] = comm.allgather(x, algorithm=a)
        for a in comm.algorithms("alltoall"):
            got["alltoall", a] = comm.alltoall(x, algorithm=a)
        for a in comm.algorithms("gather"):
            got["gather", a] = comm.gather(x, 1, algorithm=a)
        for a in comm.algorithms("scatter"):
            got["scatter", a] = comm.scatter(x, 3, algorithm=a)
        for a in comm.algorithms("broadcast"):
            got["broadcast", a] = comm.broadcast(x.copy(), 4, algorithm=a)
        return got
    results = run(body)
    offsets = cc.partition(COUNT, SIZE)
    for r, got in enumerate(results):
        for (collective, algorithm), result in got.items():
            expected = {"allgather": np.concatenate(inputs),
                        "alltoall": np.concatenate([x[offsets[r]:offsets[r + 1]] for x in inputs]),
                        "gather": np.concatenate(inputs) if r == 1 else None,
                        "scatter": inputs[3][offsets[r]:offsets[r + 1]],
                        "broadcast": inputs[4]}[collective]
            if expected is None:
                assert result is None
            else:
                assert result.dtype == np.dtype(dtype) and result.tobytes() == expected.tobytes(), \
                    f"{collective} {algorithm} {dtype} rank {r}"


@pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes is not installed")
def test_bfloat16_steps_compute_in_float32_and_round_once():
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(4096) * 100).astype(BFLOAT16)
    b = (rng.standard_normal(4096)).astype(BFLOAT16)
    for op, ufunc in (("sum", np.add), ("prod", np.multiply), ("max", np.maximum)):
        expected = ufunc(a.astype(np.float32), b.astype(np.float32)).astype(BFLOAT16)
        assert kernels.reduce_into(a.copy(), b, op).tobytes() == expected.tobytes(), op


def test_bool_max_is_logical_or_and_min_logical_and():
    inputs = [np.array([True, False, False, True]), np.array([False, False, True, True])]
    results = run(lambda comm: (comm.allreduce(inputs[comm.rank].copy(), "max"),
                                comm.allreduce(inputs[comm.rank].copy(), "min")), size=2)
    assert results[0][0].tolist() == [True, False, True, True]
    assert results[0][1].tolist() == [False, False, False, True]


@pytest.mark.parametrize("dtype, op, words", [
    ("complex64", "max", "complex numbers have no order"), ("complex128", "min", "no order"),
    ("bool", "sum", "logical or"), ("bool", "avg", "logical"), ("uint32", "avg", "floating-point"),
])
def test_ops_a_dtype_does_not_support_are_refused_before_any_communication(dtype, op, words):
    def body(comm):
        for call in (lambda: comm.allreduce(np.zeros(3, dtype), op), lambda: comm.scan(np.zeros(3, dtype), op),
                     lambda: comm.reduce_scatter(np.zeros(3, dtype), op)):
            with pytest.raises(TypeError, match=words):
                call()
        return comm.allreduce(np.ones(2))
    assert all(np.all(r == 2) for r in run(body, size=2))

