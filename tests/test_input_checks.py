"""Arguments users pass in every form: NumPy integers as roots and counts, ndarray
subclasses, infinite timeouts, and 2-byte float averages whose sum would overflow."""
import math

import numpy as np
import pytest

import collectives as cc
from collectives.communicator import check_timeout


def test_numpy_integers_are_valid_roots_counts_and_sizes():
    def body(comm):
        x = np.full(3, float(comm.rank))
        comm.broadcast(x, root=np.int64(1))
        total = comm.reduce(np.ones(2), "sum", root=np.uint8(2))
        return x[0], None if total is None else total[0]
    assert cc.run_threads(np.int32(3), body) == [(1.0, None), (1.0, None), (1.0, 3.0)]
    assert cc.partition(np.int64(7), np.int16(3)) == [0, 3, 5, 7]


@pytest.mark.parametrize("root", [True, 1.0, "1", 3, -1])
def test_roots_that_are_not_ranks_are_refused_at_the_call(root):
    def body(comm):
        with pytest.raises(ValueError, match=r"root must be an integer \[0, 3\)"):
            comm.broadcast(np.ones(2), root=root)
        return comm.allreduce(np.ones(1))[0]             # nothing was sent: still in step
    assert cc.run_threads(3, body) == [3.0] * 3


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")    # np.matrix itself warns
def test_ndarray_subclasses_are_refused_at_the_call_with_the_fix():
    def body(comm):
        with pytest.raises(TypeError, match=r"numpy.matrix, a numpy.ndarray subclass.*numpy.asarray\(x\)"):
            comm.allreduce(np.matrix([[1.0, 2.0]]))
        return comm.allreduce(np.asarray(np.matrix([[1.0, 2.0]])))
    assert all(np.array_equal(r, [[2.0, 4.0]]) for r in cc.run_threads(2, body))


def test_an_infinite_timeout_means_no_timeout():
    assert check_timeout(math.inf) is None and check_timeout(0) is None and check_timeout(None) is None
    assert check_timeout(np.float32(2)) == 2.0
    for bad in (-1, math.nan, "10", True):
        with pytest.raises(ValueError, match="timeout"):
            check_timeout(bad)
    assert cc.run_threads(2, lambda comm: comm.timeout, timeout=float("inf")) == [None, None]


@pytest.mark.parametrize("collective", ["allreduce", "reduce_scatter", "reduce"])
@pytest.mark.parametrize("size", [2, 3, 4])
def test_float16_average_never_overflows_when_the_mean_fits(collective, size):
    def body(comm, value):
        x = np.full(5, value, np.float16)
        results = []
        for name in comm.algorithms(collective):
            if collective == "allreduce":
                results.append(comm.allreduce(x.copy(), "avg", algorithm=name))
            elif collective == "reduce_scatter":
                results.append(comm.reduce_scatter(x, "avg", algorithm=name))
            elif comm.rank == 0:
                results.append(comm.reduce(x.copy(), "avg", 0, algorithm=name))
            else:
                comm.reduce(x, "avg", 0, algorithm=name)
        return results
    for value in (60000.0, 65504.0, -65504.0):
        for results in cc.run_threads(size, body, value):
            for result in results:
                assert result.dtype == np.float16 and np.all(result == np.float16(value)), (value, result)


def test_float16_average_of_mixed_values_rounds_once():
    values = np.array([1000.0, 0.1, 3.0, 65504.0], np.float16)

    def body(comm):
        return comm.allreduce(np.full(2, values[comm.rank]), "avg")
    expected = np.float16(values.astype(np.float64).mean())
    for result in cc.run_threads(4, body):
        assert np.all(result == expected)
