"""The per-call path remembers what a call signature needs (collectives.plans), and every
check that guards the user still runs on a call whose signature it already knows."""
import numpy as np
import pytest

import collectives as cc
from collectives import tuning


def one_rank(body):
    return cc.run_threads(1, body)[0]


def test_a_known_signature_still_refuses_a_buffer_that_is_not_contiguous():
    def body(comm):
        comm.allreduce(np.ones(4))
        with pytest.raises(ValueError, match="C-contiguous"):
            comm.allreduce(np.ones(8)[::2])            # same type, dtype and shape
    one_rank(body)


def test_a_known_signature_still_refuses_a_read_only_buffer_written_in_place():
    def body(comm):
        comm.allreduce(np.ones(4))
        frozen = np.ones(4)
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            comm.allreduce(frozen)
        comm.broadcast(np.ones(4))
        with pytest.raises(ValueError, match="read-only"):
            comm.broadcast(frozen)
        assert comm.allreduce(frozen, out=np.empty(4))[0] == 1     # read-only is fine out of place
    one_rank(body)


def test_a_known_signature_still_checks_out_on_every_call():
    def body(comm):
        comm.allreduce(np.ones(4), out=np.empty(4))
        with pytest.raises(ValueError, match="shape"):
            comm.allreduce(np.ones(4), out=np.empty(5))
        with pytest.raises(TypeError, match="dtype"):
            comm.allreduce(np.ones(4), out=np.empty(4, np.float32))
        comm.reduce_scatter(np.ones(4), out=np.empty(4))
        with pytest.raises(ValueError, match="shape"):
            comm.reduce_scatter(np.ones(4), out=np.empty(3))
    one_rank(body)


def test_an_argument_equal_to_a_known_one_but_of_another_type_is_checked_again():
    def body(comm):
        comm.broadcast(np.ones(2), root=0)
        with pytest.raises(ValueError, match="root must be an integer"):
            comm.broadcast(np.ones(2), root=False)    # False == 0 and hashes alike
        comm.reduce_scatter(np.ones(2), counts=[2])
        with pytest.raises(ValueError, match="counts"):
            comm.reduce_scatter(np.ones(2), counts=[2.0])
    one_rank(body)


def test_unhashable_arguments_get_the_checks_own_errors():
    def body(comm):
        with pytest.raises(ValueError, match="unknown op"):
            comm.allreduce(np.ones(2), op=["sum"])
        with pytest.raises(TypeError, match="numpy.ndarray"):
            comm.allreduce([1.0, 2.0])
    one_rank(body)


def test_a_signature_is_recorded_and_numbered_on_every_call_after_the_first():
    def body(comm):
        for _ in range(3):
            comm.allreduce(np.ones(2, np.float32))
        return comm.flight_record()
    record = one_rank(body)
    assert [(e["seq"], e["call"], e["state"]) for e in record] == [
        (i, "allreduce(count=2, dtype=float32, op=sum, algorithm=ring)", "completed") for i in (1, 2, 3)]


def test_a_freed_communicator_refuses_a_known_signature():
    def body(comm):
        x = np.ones(2)
        comm.allreduce(x)
        comm.free()
        with pytest.raises(RuntimeError, match="freed"):
            comm.allreduce(x)
    one_rank(body)


def test_a_new_tuning_is_used_by_a_known_signature():
    def choice(comm):
        comm.allreduce(np.ones(2))
        return comm.flight_record()[-1]["algorithm"]

    def body(comm):
        before = choice(comm)
        other = "tree" if before != "tree" else "ring"
        measured = {"allreduce": {"world_size": comm.size, "sizes": [16],
                                  "times": {before: [1.0], other: [1e-9]}}}
        tuning.use(tuning.Tuning(measured=measured))
        try:
            return before, other, choice(comm)
        finally:
            tuning.use(None)
    before, other, after = cc.run_threads(2, body)[0]
    assert after == other != before


def test_the_same_answers_whether_the_signature_is_new_or_known():
    def body(comm):
        results = []
        for op in ("sum", "max", "avg", "sum"):
            x = np.arange(6, dtype=np.float16).reshape(2, 3) + comm.rank
            results.append(comm.allreduce(x, op=op).copy())
        block = comm.reduce_scatter(np.arange(6.0) + comm.rank, op="avg")
        return results, block
    for rank, (results, block) in enumerate(cc.run_threads(3, body)):
        base = np.arange(6, dtype=np.float16).reshape(2, 3)
        assert np.array_equal(results[0], 3 * base + 3) and np.array_equal(results[3], results[0])
        assert np.array_equal(results[1], base + 2)
        assert np.array_equal(results[2], base + 1)
        assert np.array_equal(block, np.arange(2.0 * rank, 2.0 * rank + 2) + 1)


def test_the_rest_of_the_collective_set_rechecks_what_its_known_signatures_cannot_vouch_for():
    def body(comm):
        comm.gather(np.ones(2), root=0)
        with pytest.raises(ValueError, match="root must be an integer"):
            comm.gather(np.ones(2), root=False)
        comm.alltoallv(np.ones(2), [2], [2])
        with pytest.raises(ValueError, match="send_counts"):
            comm.alltoallv(np.ones(2), [2.0], [2])
        comm.scan(np.ones(2))
        with pytest.raises(ValueError, match="C-contiguous"):
            comm.scan(np.ones(4)[::2])
        comm.scatter(np.ones(2), out=np.empty(2))
        with pytest.raises(ValueError, match="shape"):
            comm.scatter(np.ones(2), out=np.empty(3))
    one_rank(body)


def test_a_numpy_integer_root_makes_the_same_call_as_a_python_int():
    def body(comm):
        root = np.int64(1) if comm.rank == 0 else 1     # alike across ranks: no mismatch
        return comm.gather(np.full(2, comm.rank), root=root)
    results = cc.run_threads(2, body)
    assert results[0] is None and np.array_equal(results[1], [0, 0, 1, 1])


def test_an_argument_error_is_reported_alone_not_chained_to_the_plan_lookup():
    def body(comm):
        with pytest.raises(TypeError) as info:
            comm.allreduce([1.0, 2.0])
        return info.value.__context__
    assert one_rank(body) is None
