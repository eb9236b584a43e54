"""The prepared one-shot all-reduce (collectives.algorithms.prepare): a plain synchronous
small call runs the algorithm bound to its signature, with the same bits, checks, call
tags, flight record and errors as the layered path, which every other call still takes."""
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
    from collectives.plans import Plans
    plan_lookup = Plans.get

    def body(comm):
        x, out = np.ones(6), np.empty(6)
        comm.allreduce(x, algorithm="oneshot")                  # plans made: in place, out of place
        comm.allreduce(x, algorithm="oneshot", out=out)
        comm.barrier()
        if comm.rank == 0:
            monkeypatch.setattr(Plans, "get", refusing)
        comm.barrier()
        repeated = comm.allreduce(np.ones(6), algorithm="oneshot").copy(), \
            comm.allreduce(np.ones(6), algorithm="oneshot", out=out).copy()
        comm.barrier()
        if comm.rank == 0:
            monkeypatch.setattr(Plans, "get", plan_lookup)
        comm.barrier()
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
