"""Everything has an owner and an end: free(), with-blocks, collection, and run_threads
leave no thread, channel or communicator behind."""
import gc
import threading

import numpy as np
import pytest

import collectives as cc

pytestmark = pytest.mark.faults


def engine_threads():
    """Threads started by the engine (ranks of run_threads, communicators' executors)."""
    return [t for t in threading.enumerate() if t.name.startswith(("rank-", "collectives-"))]


def test_free_ends_the_background_thread_and_later_calls_raise():
    def body(comm):
        work = comm.allreduce(np.ones(3), async_op=True)
        comm.free()
        assert work.test() and work.wait()[0] == comm.size      # queued work finished first
        assert comm.freed
        comm.free()                                             # a second free does nothing
        with pytest.raises(RuntimeError, match=f"rank {comm.rank}: allreduce on a freed Communicator"):
            comm.allreduce(np.ones(3))
        with pytest.raises(RuntimeError, match="freed"):
            comm.split(0)
        return [t.name for t in engine_threads() if t.name == f"collectives-rank{comm.rank}"]
    # every rank's executor thread is gone once its own free() returned
    assert cc.run_threads(3, body) == [[], [], []]


def test_a_with_block_frees_the_communicator_and_its_sub_communicators():
    def body(comm):
        with comm.split(comm.rank % 2) as half:
            quarter = half.split(0)
            quarter.allreduce(np.ones(2), async_op=True).wait()
        return half.freed, quarter.freed
    assert cc.run_threads(4, body) == [(True, True)] * 4


def test_a_collected_communicator_ends_its_thread():
    def body(comm):
        sub = comm.split(0)
        sub.allreduce(np.ones(2), async_op=True).wait()
        name = f"collectives-rank{sub.rank}"
        del sub
        gc.collect()
        comm.barrier()
        return sum(t.name == name for t in threading.enumerate())
    # the world communicators' threads were never started (no async work on them)
    assert cc.run_threads(2, body) == [0, 0]


def test_run_threads_joins_every_thread_even_when_a_rank_raises_with_work_in_flight():
    before = len(engine_threads())

    def body(comm):
        work = comm.allreduce(np.ones(1000), async_op=True)
        sub = comm.split(0)
        sub.allreduce(np.ones(10), async_op=True)
        if comm.rank == 1:
            raise KeyError("rank 1 gives up")
        comm.allreduce(np.ones(5), async_op=True)
        return work
    for _ in range(5):
        with pytest.raises(KeyError, match="rank 1 gives up"):
            cc.run_threads(4, body, timeout=20)
    assert len(engine_threads()) == before


def test_run_threads_with_async_work_leaves_no_thread():
    before = threading.active_count()
    for _ in range(20):
        cc.run_threads(4, lambda comm: comm.allreduce(np.ones(4), async_op=True).wait())
    assert threading.active_count() == before


def test_ten_thousand_split_collective_free_cycles_keep_threads_and_objects_flat():
    def cycles(comm, count):
        marks = []
        for i in range(count):
            with comm.split(0) as sub:
                if i % 2:
                    sub.allreduce(np.ones(4), algorithm="ring")
                else:
                    sub.allreduce(np.ones(4), algorithm="ring", async_op=True).wait()
            if i % 1000 == 999:
                comm.barrier()                # both ranks at the same point while counting
                if comm.rank == 0:
                    gc.collect()
                    marks.append((threading.active_count(), len(gc.get_objects())))
                comm.barrier()
        return marks
    marks = cc.run_threads(2, cycles, 10_000)[0]
    threads = {count for count, _ in marks}
    assert len(threads) == 1, marks
    objects = [n for _, n in marks]
    assert objects[-1] - objects[0] < 500, marks    # a leak of one object per cycle is 9000


@pytest.mark.mpi
def test_freed_communicators_are_handed_back_to_mpi():
    from tests.mpirun import mpirun
    result = mpirun(2, "-m", "tests.lifetime_check", "2500", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lifetime ok 1" in result.stdout
