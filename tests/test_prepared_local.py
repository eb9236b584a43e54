"""The prepared forms (collectives.algorithms.prepare: the one-shot all-reduce, the
shared-memory reduce-scatter, all-gather, broadcast and reduce): a plain synchronous call
runs the algorithm bound to its signature, with the same bits, checks, call tags, flight
record and errors as the layered path, which every other call still takes; a repeated one
skips the plan lookup and still refuses what the layered checks refuse."""
from contextlib import contextmanager

import numpy as np
import pytest

import collectives as cc
from collectives import algorithms
from tests.reference import assert_matches


def refusing(*args):
    raise AssertionError("the layered one-shot ran")


@pytest.fixture
def layered_refuses(monkeypatch):
    """The registry's one-shot function fails if called: only the prepared form may run."""
    monkeypatch.setitem(algorithms.ALGORITHMS["allreduce"], "oneshot", refusing)


@contextmanager
def plan_lookup_refused(comm, monkeypatch):
    """Within the block every rank's Plans.get raises (rank 0 patches the class between
    barriers): a call that still succeeds did not look its plan up."""
    from collectives.plans import Plans
    lookup = Plans.get
    comm.barrier()
    if comm.rank == 0:
        monkeypatch.setattr(Plans, "get", refusing)
    comm.barrier()
    yield
    comm.barrier()
    if comm.rank == 0:
        monkeypatch.setattr(Plans, "get", lookup)
    comm.barrier()


def test_a_plain_small_call_takes_the_prepared_form_and_other_calls_the_layered_one(layered_refuses):
    def body(comm):
        x = np.arange(6, dtype=np.float32) + comm.rank
        comm.allreduce(x, algorithm="oneshot")                        # synchronous: prepared
        comm.allreduce(np.ones((2, 3)), algorithm="oneshot", out=np.empty((2, 3)))
        with pytest.raises(AssertionError, match="layered"):
            comm.allreduce(np.ones(6, np.float32), algorithm="oneshot", async_op=True).wait()
        return x
    results = cc.run_threads(3, body, timeout=30)
    assert all(np.array_equal(x, np.arange(6) * 3 + 3) for x in results)


def test_an_observed_communicator_takes_the_layered_form_until_the_observer_goes(layered_refuses):
    from collectives.observe import Observer

    def body(comm):
        x = np.ones(4)
        comm.allreduce(x, algorithm="oneshot")
        watcher = Observer()
        comm.add_observer(watcher)
        with pytest.raises(AssertionError, match="layered"):
            comm.allreduce(x, algorithm="oneshot")
        comm.remove_observer(watcher)
        return comm.allreduce(x, algorithm="oneshot")
    assert all(np.array_equal(x, np.full(4, 4.0)) for x in cc.run_threads(2, body, timeout=30))   # 1, 2, 4


def test_big_buffers_and_debug_mode_stay_layered(layered_refuses):
    def big(comm):
        comm.allreduce(np.ones(128 << 10, np.float32), algorithm="oneshot")   # 512 KiB: over WAIT_ALL_BYTES
    with pytest.raises(Exception, match="layered"):
        cc.run_threads(2, big, timeout=30)

    def debug(comm):
        comm.allreduce(np.ones(4), algorithm="oneshot")
    with pytest.raises(Exception, match="layered"):
        cc.run_threads(2, debug, timeout=30, debug=True)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("dtype, op", [("float32", "sum"), ("float64", "prod"), ("float16", "max"),
                                       ("int32", "min"), ("int64", "sum"), ("bool", "max"), ("float64", "avg")])
def test_the_prepared_form_gives_the_layered_bits_in_and_out_of_place(n, dtype, op):
    def body(comm):
        rng = np.random.default_rng(comm.rank)
        x = (rng.standard_normal((3, 5)) * 4).astype(dtype)
        prepared_out = comm.allreduce(x, op, algorithm="oneshot", out=np.empty_like(x))
        layered_out = comm.allreduce(x, op, algorithm="oneshot", out=np.empty_like(x), async_op=True).wait()
        prepared_in = comm.allreduce(x.copy(), op, algorithm="oneshot")
        layered_in = comm.allreduce(x.copy(), op, algorithm="oneshot", async_op=True).wait()
        return x, prepared_out, layered_out, prepared_in, layered_in
    results = cc.run_threads(n, body, timeout=60)
    inputs = [result[0] for result in results]
    for _, *outputs in results:
        for output in outputs:
            assert output.tobytes() == results[0][1].tobytes()
    assert_matches(results[0][1], inputs, op)


def test_a_stalled_peer_is_named_and_a_mismatch_is_caught_on_the_prepared_form():
    def stalled(comm):
        x = np.ones(4)
        comm.allreduce(x, algorithm="oneshot")                   # the signature's plan exists
        if comm.rank == 1:
            return None
        with pytest.raises(cc.CollectiveTimeout, match="rank 1"):
            comm.allreduce(x, algorithm="oneshot")
        return comm.flight_record()[-1]["state"]
    assert cc.run_threads(2, stalled, timeout=1)[0] == "timed out"

    def mismatched(comm):
        comm.allreduce(np.ones(4), "max" if comm.rank else "sum", algorithm="oneshot")
    with pytest.raises(cc.CollectiveMismatch):
        cc.run_threads(2, mismatched, timeout=10)


def test_a_repeated_signature_skips_the_plan_lookup_and_keeps_every_check(monkeypatch):
    def body(comm):
        x, out = np.ones(6), np.empty(6)
        comm.allreduce(x, algorithm="oneshot")                  # plans made: in place, out of place
        comm.allreduce(x, algorithm="oneshot", out=out)
        with plan_lookup_refused(comm, monkeypatch):
            repeated = comm.allreduce(np.ones(6), algorithm="oneshot").copy(), \
                comm.allreduce(np.ones(6), algorithm="oneshot", out=out).copy()
        with pytest.raises(ValueError, match="C-contiguous"):
            comm.allreduce(np.ones(12)[::2], algorithm="oneshot")        # same type, dtype and shape
        frozen = np.ones(6)
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            comm.allreduce(frozen, algorithm="oneshot")
        with pytest.raises(TypeError, match="dtype"):
            comm.allreduce(x, algorithm="oneshot", out=np.empty(6, np.float32))
        with pytest.raises(ValueError, match="shape"):
            comm.allreduce(x, algorithm="oneshot", out=np.empty((2, 3)))
        with pytest.raises(ValueError, match="C-contiguous"):
            comm.allreduce(x, algorithm="oneshot", out=np.empty(12)[::2])
        with pytest.raises(ValueError, match="read-only"):
            comm.allreduce(x, algorithm="oneshot", out=frozen)
        with pytest.raises(TypeError, match="subclass"):
            comm.allreduce(np.ones(6).view(np.ma.MaskedArray), algorithm="oneshot")
        with pytest.raises(TypeError, match="subclass"):
            comm.allreduce(x, algorithm="oneshot", out=np.empty(6).view(np.ma.MaskedArray))
        from_frozen = comm.allreduce(frozen, algorithm="oneshot", out=np.empty(6)).copy()   # fine out of place
        comm.free()
        with pytest.raises(RuntimeError, match="freed"):
            comm.allreduce(x, algorithm="oneshot", out=out)
        return repeated, from_frozen
    for (in_place, out_of_place), from_frozen in cc.run_threads(2, body, timeout=30):
        assert np.array_equal(in_place, np.full(6, 2.0)) and np.array_equal(out_of_place, np.full(6, 2.0))
        assert np.array_equal(from_frozen, np.full(6, 2.0))


@pytest.fixture
def shm_layered_refuses(monkeypatch):
    """The registry's shared-memory broadcast, all-gather, reduce-scatter and reduce fail
    if called."""
    for collective in ("broadcast", "allgather", "reduce_scatter", "reduce"):
        monkeypatch.setitem(algorithms.ALGORITHMS[collective], "shm", refusing)


def test_plain_broadcasts_and_allgathers_take_the_prepared_form(shm_layered_refuses):
    def body(comm):
        x = np.arange(6.0).reshape(2, 3) * (comm.rank == 1)
        comm.broadcast(x, root=1, algorithm="shm")                     # new signature: prepared
        comm.broadcast(x, root=1, algorithm="shm")                     # repeated: prepared
        gathered = comm.allgather(np.full((1, 2), comm.rank), algorithm="shm")
        into = np.empty((comm.size, 2), np.int64)
        comm.allgather(np.full((1, 2), comm.rank), algorithm="shm", out=into)
        scalars = comm.allgather(np.float32(comm.rank + 0.5) * np.ones(()), algorithm="shm")   # 0-d
        with pytest.raises(AssertionError, match="layered"):
            comm.broadcast(x, root=1, algorithm="shm", async_op=True).wait()
        with pytest.raises(AssertionError, match="layered"):
            comm.allgather(np.ones(2), algorithm="shm", async_op=True).wait()
        return x, gathered, into, scalars
    for x, gathered, into, scalars in cc.run_threads(3, body, timeout=30):
        assert np.array_equal(x, np.arange(6.0).reshape(2, 3))
        assert np.array_equal(gathered, np.repeat(np.arange(3), 2).reshape(3, 2)) and np.array_equal(into, gathered)
        assert np.array_equal(scalars, np.arange(3) + 0.5)


def test_broadcasts_and_allgathers_too_big_for_one_round_stay_layered(shm_layered_refuses):
    def body(comm):
        comm.broadcast(np.ones(8 << 10), algorithm="shm")              # 64 KiB > a staging half
    with pytest.raises(Exception, match="layered"):
        cc.run_threads(2, body, timeout=30, shm_bytes=256 << 10)

    def gather(comm):
        comm.allgather(np.ones(6 << 10), algorithm="shm")              # 48 KiB, gathered 96 KiB
    with pytest.raises(Exception, match="layered"):
        cc.run_threads(2, gather, timeout=30, shm_bytes=256 << 10)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("shape, dtype", [((7,), "float32"), ((2, 3), "int16"), ((), "float64"), ((4,), "bool")])
def test_the_prepared_broadcast_and_allgather_match_the_layered_ones(n, shape, dtype):
    def body(comm):
        rng = np.random.default_rng(comm.rank)
        x = np.asarray(rng.standard_normal(shape) * 9).astype(dtype)     # shape (): a 0-d array
        root = comm.size - 1
        prepared_b, layered_b = x.copy(), x.copy()
        comm.broadcast(prepared_b, root=root, algorithm="shm")
        comm.broadcast(layered_b, root=root, algorithm="shm", async_op=True).wait()
        prepared_g = comm.allgather(x, algorithm="shm")
        layered_g = comm.allgather(x, algorithm="shm", async_op=True).wait()
        return x, prepared_b, layered_b, prepared_g, layered_g
    results = cc.run_threads(n, body, timeout=60)
    inputs = [result[0] for result in results]
    expected_g = np.concatenate([np.atleast_1d(x) for x in inputs])
    for _, prepared_b, layered_b, prepared_g, layered_g in results:
        assert prepared_b.tobytes() == layered_b.tobytes() == inputs[-1].tobytes()
        assert prepared_g.tobytes() == layered_g.tobytes() == expected_g.tobytes()


def test_repeated_broadcasts_and_allgathers_skip_the_plan_lookup_and_keep_every_check(monkeypatch):
    def body(comm):
        x, out = np.ones(4), np.empty(8)
        comm.broadcast(x, algorithm="shm")
        comm.allgather(x, algorithm="shm", out=out)
        with plan_lookup_refused(comm, monkeypatch):
            comm.broadcast(x, algorithm="shm")
            comm.allgather(x, algorithm="shm", out=out)
        frozen = np.ones(4)
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            comm.broadcast(frozen, algorithm="shm")
        with pytest.raises(ValueError, match="C-contiguous"):
            comm.broadcast(np.ones(8)[::2], algorithm="shm")
        refuses_what_the_layered_checks_refuse(lambda x, out: comm.allgather(x, algorithm="shm", out=out), 4, 8)
        comm.allgather(frozen, algorithm="shm", out=out)                 # read-only x is fine here
        return out
    assert all(np.array_equal(out, np.ones(8)) for out in cc.run_threads(2, body, timeout=30))


def refuses_what_the_layered_checks_refuse(call, size, out_size):
    """call(x, out) on float64 buffers of a known signature (x of `size`, out of
    `out_size` elements) still refuses a strided x and an out of another shape, of another
    dtype, or read-only."""
    with pytest.raises(ValueError, match="C-contiguous"):
        call(np.ones(2 * size)[::2], np.empty(out_size))
    with pytest.raises(ValueError, match="shape"):
        call(np.ones(size), np.empty(2 * out_size))
    with pytest.raises(TypeError, match="dtype"):
        call(np.ones(size), np.empty(out_size, np.float32))
    with pytest.raises(ValueError, match="read-only"):
        call(np.ones(size), _frozen(out_size))


def _frozen(count):
    array = np.ones(count)
    array.flags.writeable = False
    return array


def test_a_stalled_peer_is_named_and_a_mismatch_is_caught_on_the_prepared_broadcast():
    def stalled(comm):
        x = np.ones(4)
        comm.broadcast(x, algorithm="shm")
        if comm.rank == 1:
            return None
        with pytest.raises(cc.CollectiveTimeout, match="rank 1"):
            comm.broadcast(x, algorithm="shm")
        return comm.flight_record()[-1]["state"]
    assert cc.run_threads(2, stalled, timeout=1)[0] == "timed out"

    def mismatched(comm):
        comm.broadcast(np.ones(4), root=0, algorithm="shm")
        if comm.rank == 0:
            comm.broadcast(np.ones(4), root=0, algorithm="shm")
        else:
            comm.allgather(np.ones(2), algorithm="shm")
    with pytest.raises(cc.CollectiveMismatch):
        cc.run_threads(2, mismatched, timeout=10)


def test_plain_reduce_scatters_take_the_prepared_form_and_wide_averages_do_not(shm_layered_refuses):
    def body(comm):
        x = np.arange(10.0).reshape(2, 5) + comm.rank
        block = comm.reduce_scatter(x, algorithm="shm")
        again = comm.reduce_scatter(x, algorithm="shm", out=np.empty_like(block))
        uneven = comm.reduce_scatter(x, "max", algorithm="shm", counts=[7, 0, 3])
        mean = comm.reduce_scatter(x.astype(np.float32), "avg", algorithm="shm")
        with pytest.raises(AssertionError, match="layered"):
            comm.reduce_scatter(x, algorithm="shm", async_op=True).wait()
        with pytest.raises(AssertionError, match="layered"):          # float16 'avg' sums in float32
            comm.reduce_scatter(x.astype(np.float16), "avg", algorithm="shm")
        return block, again, uneven, mean
    results = cc.run_threads(3, body, timeout=30)
    total = sum(np.arange(10.0) + r for r in range(3))
    for r, (block, again, uneven, mean) in enumerate(results):
        lo, hi = cc.partition(10, 3)[r:r + 2]
        assert np.array_equal(block, total[lo:hi]) and np.array_equal(again, block)
        assert np.array_equal(uneven, (np.arange(10.0) + 2)[[0, 7, 7, 10][r]:[0, 7, 7, 10][r + 1]])
        assert np.allclose(mean, total[lo:hi] / 3)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("dtype, op", [("float32", "sum"), ("float64", "prod"), ("float16", "max"),
                                       ("int32", "min"), ("bool", "max"), ("float64", "avg")])
def test_the_prepared_reduce_scatter_gives_the_layered_bits(n, dtype, op):
    def body(comm):
        rng = np.random.default_rng(comm.rank)
        x = (rng.standard_normal((3, 7)) * 4).astype(dtype)
        prepared = comm.reduce_scatter(x, op, algorithm="shm")
        layered = comm.reduce_scatter(x, op, algorithm="shm", async_op=True).wait()
        counts = [(i % 3) * 4 for i in range(comm.size)]
        counts[-1] += 21 - sum(counts)
        prepared_v = comm.reduce_scatter(x, op, algorithm="shm", counts=counts)
        layered_v = comm.reduce_scatter(x, op, algorithm="shm", counts=counts, async_op=True).wait()
        return x, prepared, layered, prepared_v, layered_v
    results = cc.run_threads(n, body, timeout=60)
    offsets = cc.partition(21, n)
    for r, (_, prepared, layered, prepared_v, layered_v) in enumerate(results):
        assert prepared.tobytes() == layered.tobytes() and prepared_v.tobytes() == layered_v.tobytes()
        assert_matches(prepared, [x.reshape(-1)[offsets[r]:offsets[r + 1]] for x, *_ in results], op)


def test_repeated_reduce_scatters_skip_the_plan_lookup_and_keep_every_check(monkeypatch):
    def body(comm):
        x, out = np.ones(4), np.empty(2)
        comm.reduce_scatter(x, algorithm="shm", out=out)
        with plan_lookup_refused(comm, monkeypatch):
            comm.reduce_scatter(x, algorithm="shm", out=out)
        refuses_what_the_layered_checks_refuse(
            lambda x, out: comm.reduce_scatter(x, algorithm="shm", out=out), 4, 2)
        return comm.reduce_scatter(_frozen(4), algorithm="shm", out=out)     # read-only x is fine
    assert all(np.array_equal(out, np.full(2, 2.0)) for out in cc.run_threads(2, body, timeout=30))


def test_ranks_taking_the_prepared_and_the_layered_form_meet_in_one_call():
    """The prepared forms post the layered functions' sync points, so a call in which
    some ranks run one and the others the other (async_op picks the layered one) agrees,
    and the flag counters stay aligned for what follows."""
    def body(comm):
        layered = comm.rank % 2 == 1
        results = []
        for step in range(6):
            x = np.arange(12.0) * (step + 1) + comm.rank

            def call(method, *args, **kwargs):
                result = method(*args, **kwargs, async_op=layered)
                return result.wait() if layered else result
            results.append(call(comm.allreduce, x.copy(), algorithm="oneshot").copy())
            results.append(call(comm.reduce_scatter, x, algorithm="shm").copy())
            results.append(call(comm.allgather, x[:2], algorithm="shm").copy())
            results.append(call(comm.broadcast, x.copy(), root=step % comm.size, algorithm="shm").copy())
            results.append(call(comm.allreduce, x.copy(), algorithm="twoshot").copy())
        return results
    results = cc.run_threads(3, body, timeout=30)
    for step in range(6):
        xs = [np.arange(12.0) * (step + 1) + r for r in range(3)]
        for r, mine in enumerate(results):
            total = xs[0] + xs[1] + xs[2]
            lo, hi = cc.partition(12, 3)[r:r + 2]
            got = mine[5 * step:5 * step + 5]
            assert np.array_equal(got[0], total) and np.array_equal(got[4], total)
            assert np.array_equal(got[1], total[lo:hi])
            assert np.array_equal(got[2], np.concatenate([x[:2] for x in xs]))
            assert np.array_equal(got[3], xs[step % 3])


def test_an_allgather_into_an_out_that_holds_x_gives_the_layered_result():
    def body(comm):
        prepared, layered = np.zeros(2 * comm.size), np.zeros(2 * comm.size)
        prepared[2 * comm.rank:2 * comm.rank + 2] = layered[2 * comm.rank:2 * comm.rank + 2] = comm.rank + 1
        mine = slice(2 * comm.rank, 2 * comm.rank + 2)
        comm.allgather(prepared[mine], algorithm="shm", out=prepared)          # x: this rank's block of out
        comm.allgather(layered[mine], algorithm="shm", out=layered, async_op=True).wait()
        other = np.arange(2 * comm.size, dtype=float) + 10 * comm.rank
        other_layered = other.copy()
        comm.allgather(other[:2], algorithm="shm", out=other)                  # x: rank 0's block of out
        comm.allgather(other_layered[:2], algorithm="shm", out=other_layered, async_op=True).wait()
        return prepared, layered, other, other_layered
    for prepared, layered, other, other_layered in cc.run_threads(3, body, timeout=30):
        assert np.array_equal(prepared, np.repeat([1.0, 2.0, 3.0], 2)) and np.array_equal(prepared, layered)
        assert np.array_equal(other, other_layered) and np.array_equal(other, [0, 1, 10, 11, 20, 21])


def test_plain_reduces_take_the_prepared_form_on_every_rank(shm_layered_refuses):
    def body(comm):
        x = np.arange(6.0).reshape(2, 3) + comm.rank
        in_place = comm.reduce(x.copy(), root=2, algorithm="shm")
        into = np.empty((2, 3))
        out_of_place = comm.reduce(x, "max", root=1, algorithm="shm", out=into)
        again = comm.reduce(x.copy(), root=2, algorithm="shm")          # repeated: the one-function check
        mean = comm.reduce(x.astype(np.float32), "avg", root=0, algorithm="shm")
        with pytest.raises(AssertionError, match="layered"):
            comm.reduce(x.copy(), root=2, algorithm="shm", async_op=True).wait()
        with pytest.raises(AssertionError, match="layered"):          # float16 'avg' sums in float32
            comm.reduce(x.astype(np.float16), "avg", algorithm="shm")
        return in_place, out_of_place, again, mean, into, x
    results = cc.run_threads(3, body, timeout=30)
    total = sum(np.arange(6.0).reshape(2, 3) + r for r in range(3))
    for rank, (in_place, out_of_place, again, mean, _into, x) in enumerate(results):
        assert (in_place is None) == (again is None) == (rank != 2)
        assert (out_of_place is None) == (rank != 1) and (mean is None) == (rank != 0)
        assert np.array_equal(x, np.arange(6.0).reshape(2, 3) + rank)            # x is read, not written
    assert np.array_equal(results[2][0], total) and np.array_equal(results[2][2], total)
    assert results[1][1] is results[1][4] and np.array_equal(results[1][1], np.arange(6.0).reshape(2, 3) + 2)
    assert np.allclose(results[0][3], total / 3)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("dtype, op", [("float32", "sum"), ("float64", "prod"), ("float16", "max"),
                                       ("int32", "min"), ("bool", "max"), ("float64", "avg")])
def test_the_prepared_reduce_gives_the_layered_bits(n, dtype, op):
    def body(comm):
        rng = np.random.default_rng(comm.rank)
        x = (rng.standard_normal((3, 7)) * 4).astype(dtype)
        prepared = comm.reduce(x.copy(), op, root=n - 1, algorithm="shm")
        layered = comm.reduce(x.copy(), op, root=n - 1, algorithm="shm", async_op=True).wait()
        return x, prepared, layered
    results = cc.run_threads(n, body, timeout=60)
    _, prepared, layered = results[-1]
    assert prepared.tobytes() == layered.tobytes()
    assert_matches(prepared, [x for x, *_ in results], op)
    assert all(mine is None and theirs is None for _, mine, theirs in results[:-1])


def test_repeated_reduces_skip_the_plan_lookup_and_keep_every_check(monkeypatch):
    def body(comm):
        x, out = np.ones(4), np.empty(4)
        comm.reduce(x.copy(), algorithm="shm")
        comm.reduce(x, algorithm="shm", out=out)
        with plan_lookup_refused(comm, monkeypatch):
            in_place = comm.reduce(x.copy(), algorithm="shm")
            out_of_place = comm.reduce(x, algorithm="shm", out=out)
        if comm.rank == 0:                                               # root writes x in place, or out
            with pytest.raises(ValueError, match="read-only"):
                comm.reduce(_frozen(4), algorithm="shm")
            refuses_what_the_layered_checks_refuse(lambda x, out: comm.reduce(x, algorithm="shm", out=out), 4, 4)
        else:                                                            # the others only read x
            with pytest.raises(ValueError, match="C-contiguous"):
                comm.reduce(np.ones(8)[::2], algorithm="shm")
        # a read-only x is fine where nothing writes it: on root with out, anywhere else in place
        return in_place, out_of_place, comm.reduce(_frozen(4), algorithm="shm", out=out if comm.rank == 0 else None)
    (root_in, root_out, root_frozen), (other_in, other_out, other_frozen) = cc.run_threads(2, body, timeout=30)
    assert all(np.array_equal(result, np.full(4, 2.0)) for result in (root_in, root_out, root_frozen))
    assert other_in is other_out is other_frozen is None
