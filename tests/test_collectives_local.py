"""Every algorithm of every collective, on the in-process transport, at many world sizes,
counts, ops and dtypes, against the float64 (or exact integer) reference."""
import numpy as np
import pytest

import collectives as cc
from tests.reference import DTYPES, assert_matches, make_input

SIZES = [1, 2, 3, 4, 5, 7, 8, 16]
COUNTS = [0, 1, 3, 13, 1000]
OPS = ["sum", "prod", "max", "min", "avg"]


def algorithms(collective):
    return cc.run_threads(1, lambda comm: comm.algorithms(collective))[0]


def run(size, fn):
    return cc.run_threads(size, fn, timeout=20)


def assert_bitwise_equal(results, what):
    for rank, result in enumerate(results[1:], 1):
        assert result.tobytes() == results[0].tobytes(), f"{what}: rank {rank} differs from rank 0"


def test_in_process_transport_offers_every_algorithm_but_mpi():
    assert algorithms("allreduce") == ["ring", "tree", "recursive_doubling", "rabenseifner",
                                       "oneshot", "twoshot", "shm_ring"]
    for collective in ("reduce_scatter", "allgather", "broadcast", "reduce"):
        assert "mpi" not in algorithms(collective) and len(algorithms(collective)) >= 2


@pytest.mark.parametrize("algorithm", algorithms("allreduce"))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("count", COUNTS)
def test_allreduce_sum_matches_reference_and_is_bitwise_equal_on_all_ranks(algorithm, size, count):
    inputs = [make_input(r, count, "float64", "sum") for r in range(size)]
    results = run(size, lambda comm: comm.allreduce(inputs[comm.rank].copy(), algorithm=algorithm))
    for result in results:
        assert_matches(result, inputs, "sum", f"{algorithm} n={size} count={count}")
    assert_bitwise_equal(results, algorithm)


OP_DTYPES = [(op, dtype) for op in OPS for dtype in DTYPES
             if op != "avg" or np.dtype(dtype).kind == "f"]   # avg on integers is an error


@pytest.mark.parametrize("algorithm", algorithms("allreduce"))
@pytest.mark.parametrize("op, dtype", OP_DTYPES)
def test_allreduce_every_op_and_dtype(algorithm, op, dtype):
    size, count = 5, 37
    inputs = [make_input(r, count, dtype, op) for r in range(size)]
    results = run(size, lambda comm: comm.allreduce(inputs[comm.rank].copy(), op, algorithm=algorithm))
    for result in results:
        assert result.dtype == np.dtype(dtype)
        assert_matches(result, inputs, op, f"{algorithm} {dtype} {op}")
    assert_bitwise_equal(results, f"{algorithm} {dtype} {op}")


@pytest.mark.parametrize("algorithm", algorithms("allreduce"))
def test_allreduce_is_bitwise_reproducible_from_run_to_run(algorithm):
    inputs = [make_input(r, 999, "float32", "sum") for r in range(6)]
    first, second = (run(6, lambda comm: comm.allreduce(inputs[comm.rank].copy(), algorithm=algorithm))
                     for _ in range(2))
    assert first[0].tobytes() == second[0].tobytes()


@pytest.mark.parametrize("algorithm", algorithms("allreduce"))
def test_allreduce_combines_signed_zeros_in_one_order_on_every_rank(algorithm):
    # max(+0, -0) depends on operand order; ranks must still agree bit for bit.
    values = [np.array([0.0, -0.0, np.nan, 1.0]) * (1 if r % 2 else -1) for r in range(6)]
    results = run(6, lambda comm: comm.allreduce(values[comm.rank].copy(), "max", algorithm=algorithm))
    assert_bitwise_equal(results, algorithm)


@pytest.mark.parametrize("algorithm", algorithms("allreduce"))
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_allreduce_out_of_place_keeps_input_and_keeps_shape(algorithm, size):
    inputs = [make_input(r, 24, "float32", "sum").reshape(2, 3, 4) for r in range(size)]

    def body(comm):
        x = inputs[comm.rank].copy()
        out = np.full_like(x, np.nan)
        result = comm.allreduce(x, out=out, algorithm=algorithm)
        assert result is out and np.array_equal(x, inputs[comm.rank])
        in_place = comm.allreduce(x, algorithm=algorithm)
        assert in_place is x and np.array_equal(in_place, out)
        return out
    for result in run(size, body):
        assert result.shape == (2, 3, 4)
        assert_matches(result.ravel(), [x.ravel() for x in inputs], "sum")


@pytest.mark.parametrize("algorithm", algorithms("reduce_scatter"))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("op", ["sum", "max", "avg"])
def test_reduce_scatter_returns_this_ranks_block(algorithm, size, count, op):
    inputs = [make_input(r, count, "float64", op) for r in range(size)]
    offsets = cc.partition(count, size)

    def body(comm):
        x = inputs[comm.rank].copy()
        block = comm.reduce_scatter(x, op, algorithm=algorithm)
        assert np.array_equal(x, inputs[comm.rank]), "reduce_scatter modified its input"
        return block
    results = run(size, body)
    gathered = np.concatenate(results)
    assert [len(b) for b in results] == [offsets[i + 1] - offsets[i] for i in range(size)]
    assert_matches(gathered, inputs, op, f"{algorithm} n={size} count={count}")


@pytest.mark.parametrize("algorithm", algorithms("allgather"))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 2), (13,)])
def test_allgather_concatenates_along_axis_0(algorithm, size, shape):
    inputs = [np.asarray(np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape) + 100 * r)
              for r in range(size)]
    results = run(size, lambda comm: comm.allgather(inputs[comm.rank], algorithm=algorithm))
    expected = np.concatenate([np.atleast_1d(x) for x in inputs])
    for result in results:
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("algorithm", algorithms("broadcast"))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("count", [0, 1, 1000, 20000])
def test_broadcast_copies_roots_buffer_everywhere(algorithm, size, count):
    root = size // 2
    source = make_input(root, count, "float32", "sum")

    def body(comm):
        x = source.copy() if comm.rank == root else np.zeros(count, np.float32)
        assert comm.broadcast(x, root, algorithm=algorithm) is x
        return x
    for result in run(size, body):
        assert result.tobytes() == source.tobytes()


@pytest.mark.parametrize("algorithm", algorithms("reduce"))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("count", [0, 1, 13, 20000])
def test_reduce_writes_result_on_root_only(algorithm, size, count):
    root = size - 1
    inputs = [make_input(r, count, "float64", "sum") for r in range(size)]

    def body(comm):
        x = inputs[comm.rank].copy()
        result = comm.reduce(x, "sum", root, algorithm=algorithm)
        if comm.rank != root:
            assert result is None and np.array_equal(x, inputs[comm.rank])
        return result
    results = run(size, body)
    assert_matches(results[root], inputs, "sum", f"{algorithm} n={size}")


def test_reduce_out_on_root_leaves_x_alone():
    inputs = [np.arange(5.0) + r for r in range(3)]

    def body(comm):
        x = inputs[comm.rank].copy()
        out = np.empty(5) if comm.rank == 0 else None
        result = comm.reduce(x, out=out, algorithm="tree")
        assert np.array_equal(x, inputs[comm.rank])
        return result
    assert np.array_equal(run(3, body)[0], sum(inputs))


@pytest.mark.parametrize("collective", ["allreduce", "reduce_scatter", "allgather", "broadcast", "reduce"])
def test_auto_picks_one_of_ours_and_is_correct(collective):
    def body(comm):
        x = np.ones(100, np.float64)
        return getattr(comm, collective)(x, algorithm="auto")
    results = run(4, body)
    expected = {"allreduce": 4.0, "reduce_scatter": 4.0, "allgather": 1.0, "broadcast": 1.0, "reduce": 4.0}
    assert np.all(results[0] == expected[collective])
