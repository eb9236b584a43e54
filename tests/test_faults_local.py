"""Fault injection, in-process, debug mode off: one rank calls a collective differently
(op, dtype of the same size or another, count off by one, root, algorithm). Every such
fault ends either in the right answer on the ranks that finished or in an error naming
the rank that called differently; never in a silent wrong answer."""
import re

import numpy as np
import pytest

import collectives as cc

pytestmark = pytest.mark.faults

CULPRIT = 1


def outcomes(size, fn, timeout=10.0):
    """Run fn(comm) on `size` ranks; each rank's result, or the exception it raised."""
    seen = {}

    def body(comm):
        try:
            seen[comm.rank] = fn(comm)
        except Exception as exc:
            seen[comm.rank] = exc
            raise                       # so that the other ranks stop waiting
    try:
        cc.run_threads(size, body, timeout=timeout)
    except Exception:
        pass
    return [seen.get(rank) for rank in range(size)]


def assert_named(results, culprit, expected, culprit_call):
    """Every error names the culprit: a CollectiveMismatch between the culprit and the rank
    that received its message, naming the culprit's call (recovered from the message), or,
    where no message of the culprit's reached a rank that checks it, a CollectiveTimeout
    whose flight summary names the culprit's call; other errors only say that a rank gave
    up because another failed. Ranks that finished hold expected(rank)."""
    named = 0
    for rank, result in enumerate(results):
        if isinstance(result, cc.CollectiveMismatch):
            assert culprit in (result.rank, result.peer), str(result)
            assert culprit_call in str(result) and f"rank {result.peer} called" in str(result), str(result)
            assert result.peer_signature is not None, str(result)    # the peer's call was recovered
            named += 1
        elif isinstance(result, cc.CollectiveTimeout):
            assert re.search(rf"ranks \[{culprit}\]: .*{re.escape(culprit_call)}", str(result)), str(result)
            named += 1
        elif isinstance(result, Exception):
            assert isinstance(result, cc.TransportError) and "gave up because" in str(result), repr(result)
        elif rank != culprit:
            assert np.array_equal(result, expected(rank)), (rank, result)
    assert named, results


def allreduce_case(change, algorithm):
    """fn(comm): an all-reduce where the culprit changes one argument."""
    def fn(comm):
        kwargs = {"op": "sum", "dtype": np.float32, "count": 10, "algorithm": algorithm}
        if comm.rank == CULPRIT:
            kwargs.update(change)
        x = np.full(kwargs["count"], comm.rank + 1, kwargs["dtype"])
        return comm.allreduce(x, kwargs["op"], algorithm=kwargs["algorithm"])
    return fn


@pytest.mark.parametrize("size", [2, 3, 4, 5])
@pytest.mark.parametrize("algorithm", ["ring", "tree", "recursive_doubling", "rabenseifner"])
@pytest.mark.parametrize("change, call", [
    ({"op": "max"}, "op=max"),
    ({"dtype": np.int32}, "dtype=int32"),             # the same size: the bytes would fit
    ({"dtype": np.float64}, "dtype=float64"),         # another size
    ({"count": 11}, "count=11"),                      # one more
    ({"count": 9}, "count=9"),                        # one fewer
])
def test_an_allreduce_called_differently_on_one_rank_is_named(size, algorithm, change, call):
    total = sum(range(1, size + 1))
    results = outcomes(size, allreduce_case(change, algorithm))
    assert_named(results, CULPRIT, lambda rank: np.full(10, total, np.float32), call)


@pytest.mark.parametrize("size", [3, 4, 6])
@pytest.mark.parametrize("algorithm", ["tree", "pipeline"])
def test_a_broadcast_with_another_root_on_one_rank_is_named(size, algorithm):
    def fn(comm):
        x = np.full(10, 7.0) if comm.rank == 0 else np.zeros(10)
        root = 2 if comm.rank == CULPRIT else 0
        return comm.broadcast(x, root, algorithm=algorithm)
    results = outcomes(size, fn, timeout=2.0)
    assert_named(results, CULPRIT, lambda rank: np.full(10, 7.0), "root=2")


@pytest.mark.parametrize("size", [2, 3, 4])
@pytest.mark.parametrize("collective, change, call", [
    ("reduce_scatter", {"op": "min"}, "op=min"),
    ("reduce_scatter", {"count": 13}, "count=13"),
    ("reduce", {"dtype": np.int32}, "dtype=int32"),
    ("reduce", {"root": 1}, "root=1"),
    ("allgather", {"count": 11}, "shape=(11,)"),
    ("allgather", {"dtype": np.float64}, "dtype=float64"),
])
def test_other_collectives_called_differently_on_one_rank_are_named(size, collective, change, call):
    def fn(comm):
        args = {"op": "sum", "dtype": np.float32, "count": 12, "root": 0}
        if comm.rank == CULPRIT:
            args.update(change)
        x = np.full(args["count"], 1, args["dtype"])
        if collective == "reduce_scatter":
            return comm.reduce_scatter(x, args["op"], algorithm="ring")
        if collective == "reduce":
            result = comm.reduce(x, args["op"], args["root"], algorithm="tree")
            return np.full(12, size, np.float32) if result is None else result
        return comm.allgather(x, algorithm="ring")
    results = outcomes(size, fn, timeout=2.0)
    blocks = cc.partition(12, size)
    expected = {"allgather": lambda rank: np.ones(12 * size, np.float32),
                "reduce": lambda rank: np.full(12, size, np.float32),
                "reduce_scatter": lambda rank: np.full(blocks[rank + 1] - blocks[rank], size, np.float32)}
    assert_named(results, CULPRIT, expected[collective], call)


def test_another_algorithm_on_one_rank_is_an_error_naming_it():
    """ring on one rank, recursive doubling elsewhere: messages cross and are caught."""
    def fn(comm):
        algorithm = "ring" if comm.rank == CULPRIT else "recursive_doubling"
        return comm.allreduce(np.ones(8), algorithm=algorithm)
    results = outcomes(4, fn)
    assert_named(results, CULPRIT, lambda rank: np.full(8, 4.0), "algorithm=ring")


def test_another_algorithm_whose_messages_never_cross_times_out_naming_the_rank():
    """tree on one rank, ring elsewhere: no message reaches a rank that would check it,
    so the ranks wait; the timeout's flight summary names the rank and its call."""
    def fn(comm):
        return comm.allreduce(np.ones(8), algorithm="tree" if comm.rank == CULPRIT else "ring")
    results = outcomes(4, fn, timeout=1.0)
    summaries = [str(r) for r in results if isinstance(r, cc.CollectiveTimeout)]
    assert summaries, results
    assert all(re.search(r"ranks \[1\]: allreduce\(.*algorithm=tree\)", s) for s in summaries), summaries


def test_a_rank_that_skips_a_call_is_named_by_the_next_message():
    def fn(comm):
        x = np.ones(4)
        comm.allreduce(x, algorithm="ring")
        if comm.rank != CULPRIT:
            comm.allreduce(x, algorithm="ring")
        comm.allgather(x, algorithm="ring")
        return None
    results = outcomes(3, fn)
    mismatches = [r for r in results if isinstance(r, cc.CollectiveMismatch)]
    assert mismatches
    for error in mismatches:
        assert CULPRIT in (error.rank, error.peer)
        if error.peer == CULPRIT:      # the culprit's allgather, in place of the all-reduce
            assert re.search(r"rank 1 called allgather\(shape=\(4,\), dtype=float64, "
                             r"algorithm=ring\) #2", str(error)), str(error)


def test_debug_mode_still_reports_every_rank_at_once():
    def fn(comm):
        return comm.allreduce(np.ones(3), "max" if comm.rank == 2 else "sum")
    seen = {}

    def body(comm):
        try:
            fn(comm)
        except cc.CollectiveMismatch as exc:
            seen[comm.rank] = str(exc)
    cc.run_threads(4, body, debug=True)
    assert sorted(seen) == [0, 1, 2, 3]
    assert all("ranks [2]: allreduce(count=3, dtype=float64, op=max" in s for s in seen.values())


def test_calls_made_alike_pass_the_check_in_every_order_and_with_async_work():
    def fn(comm):
        works = [comm.allreduce(np.full(5, float(i)), algorithm="ring", async_op=True) for i in range(4)]
        block = comm.reduce_scatter(np.ones(7), "sum")
        comm.barrier()
        with comm.split(comm.rank % 2) as half:
            total = half.allreduce(np.ones(2))
        return [w.wait()[0] for w in works], block.sum(), total[0]
    for sums, block, total in cc.run_threads(4, fn):
        assert sums == [0.0, 4.0, 8.0, 12.0] and total == 2.0 and block in (8.0, 4.0)
