"""Bad input, debug-mode mismatch checks, asynchronous collectives and split, on the
in-process transport."""
import threading
import time

import numpy as np
import pytest

import collectives as cc


def run(size, fn, **kwargs):
    return cc.run_threads(size, fn, timeout=20, **kwargs)


BAD_CALLS = {
    "a list": (lambda c: c.allreduce([1.0, 2.0]), TypeError, "numpy.ndarray"),
    "object dtype": (lambda c: c.allreduce(np.array([1, "a"], dtype=object)), TypeError, "unsupported dtype"),
    "datetime dtype": (lambda c: c.allgather(np.zeros(3, "datetime64[s]")), TypeError, "unsupported dtype"),
    "non-contiguous": (lambda c: c.allreduce(np.zeros((4, 4))[:, 1]), ValueError, "C-contiguous"),
    "read-only in place": (lambda c: c.allreduce(_read_only()), ValueError, "read-only"),
    "read-only broadcast": (lambda c: c.broadcast(_read_only()), ValueError, "read-only"),
    "out shape": (lambda c: c.allreduce(np.zeros(4), out=np.zeros(5)), ValueError, "shape"),
    "out dtype": (lambda c: c.allreduce(np.zeros(4), out=np.zeros(4, np.float32)), TypeError, "dtype"),
    "out list": (lambda c: c.allreduce(np.zeros(4), out=[0.0] * 4), TypeError, "numpy.ndarray"),
    "reduce_scatter out shape": (lambda c: c.reduce_scatter(np.zeros(8), out=np.zeros(8)), ValueError, "shape"),
    "allgather out shape": (lambda c: c.allgather(np.zeros(2), out=np.zeros(2)), ValueError, "shape"),
    "unknown op": (lambda c: c.allreduce(np.zeros(4), "mean"), ValueError, "'sum', 'prod', 'max', 'min', 'avg'"),
    "op not a string": (lambda c: c.allreduce(np.zeros(4), np.add), ValueError, "unknown op"),
    "avg on integers": (lambda c: c.allreduce(np.zeros(4, np.int32), "avg"), TypeError, "floating-point"),
    "unknown algorithm": (lambda c: c.allreduce(np.zeros(4), algorithm="butterfly"), ValueError, "'ring', 'tree'"),
    "mpi on threads": (lambda c: c.allreduce(np.zeros(4), algorithm="mpi"), ValueError, "valid are"),
    "root too large": (lambda c: c.broadcast(np.zeros(4), root=c.size), ValueError, "root"),
    "negative root": (lambda c: c.reduce(np.zeros(4), root=-1), ValueError, "root"),
    "root not int": (lambda c: c.reduce(np.zeros(4), root=1.0), ValueError, "root"),
    "unknown collective": (lambda c: c.algorithms("alltoallw"), ValueError, "allreduce"),
}


def _read_only():
    x = np.zeros(4)
    x.flags.writeable = False
    return x


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_raises_a_clear_error_and_the_communicator_stays_usable(case):
    call, error, words = BAD_CALLS[case]

    def body(comm):
        with pytest.raises(error, match=None) as info:
            call(comm)
        assert words in str(info.value), str(info.value)
        return comm.allreduce(np.ones(3))       # still usable, on every rank
    for result in run(3, body):
        assert np.array_equal(result, [3.0, 3.0, 3.0])


def test_read_only_input_is_fine_out_of_place():
    def body(comm):
        out = np.empty(4)
        comm.allreduce(_read_only(), out=out)
        return comm.reduce_scatter(_read_only()), comm.allgather(_read_only()), out
    run(2, body)


@pytest.mark.parametrize("differs, words", [
    ("count", "count=4"), ("dtype", "dtype=float32"), ("op", "op=max"), ("algorithm", "algorithm=ring"),
])
def test_debug_mode_names_the_ranks_that_called_differently(differs, words):
    def body(comm):
        odd = comm.rank in (1, 3)
        kwargs = {"count": 4 if odd else 5, "dtype": np.float32 if odd and differs == "dtype" else np.float64,
                  "op": "max" if odd and differs == "op" else "sum",
                  "algorithm": "ring" if odd and differs == "algorithm" else "tree"}
        if differs != "count":
            kwargs["count"] = 5
        x = np.ones(kwargs["count"], kwargs["dtype"])
        with pytest.raises(cc.CollectiveMismatch) as info:
            comm.allreduce(x, kwargs["op"], algorithm=kwargs["algorithm"])
        comm.allreduce(np.ones(2))              # the communicator is still usable
        return str(info.value)
    messages = run(4, body, debug=True)
    assert all(m == messages[0] for m in messages), "every rank gets the same error"
    assert "ranks [1, 3]" in messages[0] and "ranks [0, 2]" in messages[0] and words in messages[0]


def test_debug_mode_catches_different_collectives():
    def body(comm):
        with pytest.raises(cc.CollectiveMismatch, match="broadcast") as info:
            if comm.rank == 0:
                comm.broadcast(np.zeros(3))
            else:
                comm.allreduce(np.zeros(3))
        return str(info.value)
    assert "ranks [1]" in run(2, body, debug=True)[0]


def test_debug_mode_from_environment(monkeypatch):
    monkeypatch.setenv("COLLECTIVES_DEBUG", "1")
    assert cc.debug_from_env()
    monkeypatch.setenv("COLLECTIVES_DEBUG", "0")
    assert not cc.debug_from_env()


def test_async_handles_can_be_waited_in_any_order():
    def body(comm):
        xs = [np.full(1000, comm.rank + i, np.float64) for i in range(5)]
        works = [comm.allreduce(x, async_op=True, algorithm=a)
                 for x, a in zip(xs, ["ring", "tree", "recursive_doubling", "rabenseifner", "auto"])]
        gathered = comm.allgather(np.array([comm.rank]), async_op=True)
        results = [works[i].wait() for i in (3, 0, 4, 1, 2)]
        assert all(w.test() for w in works)
        return [r[0] for r in results], gathered.wait().tolist()
    n = 4
    for sums, ranks in run(n, body):
        assert sums == [sum(range(n)) + n * i for i in (3, 0, 4, 1, 2)]
        assert ranks == list(range(n))


def test_async_work_progresses_while_the_caller_computes():
    def body(comm):
        work = comm.allreduce(np.ones(100000), async_op=True)
        deadline = time.monotonic() + 10
        while not work.test():            # never calls wait(): the collective must progress alone
            assert time.monotonic() < deadline, "async collective made no progress"
            time.sleep(0.001)
        return work.wait()[0]
    assert run(3, body) == [3.0, 3.0, 3.0]


def test_sync_call_after_async_ones_runs_after_them():
    def body(comm):
        first = comm.allreduce(np.full(10, 1.0), async_op=True)
        second = comm.allreduce(np.full(10, 2.0))     # queued behind `first` on every rank
        return first.wait()[0], second[0]
    assert run(3, body) == [(3.0, 6.0)] * 3


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_object_exchange_waits_for_queued_async_collectives(n):
    """An object exchange after an asynchronous collective runs after it, in call order:
    its messages never mix with the collective's on the shared in-process channels."""
    def body(comm):
        results = []
        for round_ in range(5):
            x = np.full(2048 * n, float(comm.rank + round_))
            work = comm.allreduce(x, algorithm="ring", async_op=True)
            seen = comm.allgather_object(("rank", comm.rank, round_))
            root = round_ % comm.size
            told = comm.broadcast_object({"from": comm.rank} if comm.rank == root else None, root=root)
            results.append((work.wait()[0], seen, told))
        return results
    for results in run(n, body):
        for round_, (total, seen, told) in enumerate(results):
            assert total == sum(range(n)) + n * round_
            assert seen == [("rank", r, round_) for r in range(n)]
            assert told == {"from": round_ % n}


def test_broadcast_object_checks_its_root():
    def body(comm):
        with pytest.raises(ValueError, match="root"):
            comm.broadcast_object("x", root=comm.size)
        return comm.broadcast_object(comm.rank, root=1)
    assert run(3, body) == [1, 1, 1]


def test_async_errors_surface_at_wait():
    def body(comm):
        work = comm.allreduce(np.ones(3), async_op=True, algorithm="ring")
        return work.wait()
    run(2, body)
    work = cc.Work("demo")
    work._finish(error=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        work.wait()


def test_a_work_handle_times_out_polls_and_serves_every_waiter():
    work = cc.Work("demo")
    assert not work.test()
    with pytest.raises(TimeoutError, match="demo did not finish within 0.01 s"):
        work.wait(timeout=0.01)
    results = []
    waiters = [threading.Thread(target=lambda: results.append(work.wait())) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    work._finish(result=42)
    for waiter in waiters:
        waiter.join(timeout=10)
    assert work.test() and results == [42, 42, 42] and work.wait(timeout=0) == 42


def test_split_makes_independent_groups():
    def body(comm):
        sub = comm.split(comm.rank % 2, key=-comm.rank)      # reversed order inside each group
        total = sub.allreduce(np.array([float(comm.rank)]))[0]
        members = sub.allgather(np.array([comm.rank]))
        world = comm.allreduce(np.ones(1))[0]
        return sub.rank, sub.size, total, members.tolist(), world
    results = run(5, body)
    assert results[0] == (2, 3, 6.0, [4, 2, 0], 5.0)
    assert results[1] == (1, 2, 4.0, [3, 1], 5.0)
    assert results[4][0] == 0


def test_split_with_color_none_leaves_the_rank_out():
    def body(comm):
        sub = comm.split(None if comm.rank == 0 else 1)
        return None if sub is None else sub.allreduce(np.ones(1))[0]
    assert run(3, body) == [None, 2.0, 2.0]


def test_a_stuck_rank_becomes_an_error_not_a_hang():
    def body(comm):
        if comm.rank == 0:
            return None                     # skips the collective
        return comm.allreduce(np.ones(3), algorithm="ring")
    start = time.monotonic()
    with pytest.raises(cc.CollectiveTimeout, match="waiting to receive from rank 0"):
        cc.run_threads(3, body, timeout=1)
    assert time.monotonic() - start < 10


def test_one_rank_failing_releases_the_others():
    def body(comm):
        if comm.rank == 1:
            raise KeyError("rank 1 broke")
        return comm.allreduce(np.ones(3))
    start = time.monotonic()
    with pytest.raises(KeyError, match="rank 1 broke"):
        cc.run_threads(4, body, timeout=30)
    assert time.monotonic() - start < 5
    assert threading.active_count() < 50
