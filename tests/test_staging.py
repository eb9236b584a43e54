"""The GPU staging logic (device views through a reused pinned arena) checked on the CPU:
every algorithm of every collective runs over a StagedTransport whose "device" copies
are NumPy copies, so the request and arena bookkeeping is exercised without a GPU."""
import numpy as np
import pytest

import collectives as cc
from collectives.communicator import Communicator
from collectives.transport import staged
from collectives.transport.local import run_threads
from tests.reference import assert_matches, make_input


class HostCopies(staged.DeviceCopies):
    """'Device' = host: counts copies and allocations so the tests can check reuse."""

    def __init__(self):
        self.allocations = 0

    def to_host(self, device_view, host_view):
        host_view[...] = device_view

    def to_device(self, host_view, device_view):
        device_view[...] = host_view

    def synchronize(self):
        pass

    def record(self):
        return self                                 # copies are immediate: nothing to wait for

    def empty_pinned(self, nbytes):
        self.allocations += 1
        return np.full(nbytes, 0xAB, np.uint8)      # poisoned: unwritten bytes would show


def staged_run(size, fn):
    def wrap(transport):
        comm = Communicator(staged.StagedTransport(transport, HostCopies()), timeout=20)
        return comm
    return run_threads(size, fn, wrap=wrap, timeout=20)


# Staged (device) buffers never use the host's shared segment: no shared-memory algorithms.
ALGORITHMS = {c: cc.run_threads(1, lambda comm, c=c: comm.algorithms(c), shm_bytes=0)[0]
              for c in ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce")}


@pytest.fixture(autouse=True)
def small_arena(monkeypatch):
    monkeypatch.setattr(staged, "ARENA_BLOCK", 256)   # force several blocks per collective


@pytest.mark.parametrize("algorithm", ALGORITHMS["allreduce"])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_allreduce_through_staging(algorithm, size):
    inputs = [make_input(r, 3001, "float32", "sum") for r in range(size)]

    def body(comm):
        comm.transport.begin()
        out = comm.allreduce(inputs[comm.rank], out=np.empty(3001, np.float32), algorithm=algorithm)
        comm.transport.begin()
        again = comm.allreduce(inputs[comm.rank].copy(), algorithm=algorithm)
        return out, again
    for out, again in staged_run(size, body):
        assert_matches(out, inputs, "sum")
        assert out.tobytes() == again.tobytes()


@pytest.mark.parametrize("collective", ["reduce_scatter", "allgather", "broadcast", "reduce"])
def test_other_collectives_through_staging(collective):
    size, count = 4, 20001
    inputs = [make_input(r, count, "float64", "max") for r in range(size)]

    def body(comm):
        results = {}
        for algorithm in ALGORITHMS[collective]:
            comm.transport.begin()
            x = inputs[comm.rank].copy()
            if collective == "reduce_scatter":
                results[algorithm] = comm.reduce_scatter(x, "max", algorithm=algorithm)
            elif collective == "allgather":
                results[algorithm] = comm.allgather(x, algorithm=algorithm)
            elif collective == "broadcast":
                results[algorithm] = comm.broadcast(x, 2, algorithm=algorithm)
            else:
                results[algorithm] = comm.reduce(x, "max", 1, algorithm=algorithm)
        return results
    results = staged_run(size, body)
    offsets = cc.partition(count, size)
    for algorithm in ALGORITHMS[collective]:
        if collective == "reduce_scatter":
            assert_matches(np.concatenate([r[algorithm] for r in results]), inputs, "max")
        elif collective == "allgather":
            assert all(np.array_equal(r[algorithm], np.concatenate(inputs)) for r in results)
        elif collective == "broadcast":
            assert all(np.array_equal(r[algorithm], inputs[2]) for r in results)
        else:
            assert_matches(results[1][algorithm], inputs, "max")
    assert offsets[-1] == count


def test_the_arena_is_reused_across_collectives():
    copies = HostCopies()

    def body(transport):
        comm = Communicator(staged.StagedTransport(transport, copies if transport.rank == 0 else HostCopies()))
        for _ in range(5):
            comm.transport.begin()
            comm.allreduce(np.ones(1000), algorithm="ring")
        return comm.transport._arena.blocks.__len__()
    blocks = run_threads(3, body)
    assert copies.allocations == blocks[0] > 0        # allocated in the first call only


def test_arena_hands_out_disjoint_aligned_views():
    arena = staged._PinnedArena(HostCopies())
    a = arena.take(100, np.float32)
    b = arena.take(24, np.float64)
    a[...] = 1
    b[...] = 2
    assert a.dtype == np.float32 and a.size == 25 and b.size == 3
    assert np.all(a == 1) and np.all(b == 2)
    arena.reset()
    assert arena.take(8, np.uint8).ctypes.data == a.ctypes.data


def test_an_empty_take_has_an_address_of_its_own():
    """MPI calls a send and a receive buffer at one address aliased, even when one is empty
    (seen on the GPU: reduce_scatter of 1 element over 2 ranks, algorithm "mpi")."""
    arena = staged._PinnedArena(HostCopies())
    empty, full, last = arena.take(0, np.float16), arena.take(2, np.float16), arena.take(0, np.float16)
    addresses = [empty.ctypes.data, full.ctypes.data, last.ctypes.data]
    assert empty.size == 0 and last.size == 0 and len(set(addresses)) == 3, addresses


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("", False)])
def test_cuda_aware_can_be_forced(monkeypatch, value, expected):
    from collectives.buffers import cuda_aware_mpi
    monkeypatch.setenv("COLLECTIVES_CUDA_AWARE", value)
    assert cuda_aware_mpi(lambda: False) is expected
    monkeypatch.delenv("COLLECTIVES_CUDA_AWARE")
    assert cuda_aware_mpi(lambda: True) is True and cuda_aware_mpi(None) is False
