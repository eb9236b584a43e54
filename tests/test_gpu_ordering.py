"""The GPU path's device and stream ordering, on the CPU, through the CuPy stand-in of
tests/cupy_standin.py: two "GPUs", per-thread default streams whose work runs only when
something waits for it, a CUDA-aware "MPI" that reads and writes device memory the moment
it likes. Each test pins one ordering promise of collectives/work.py and
collectives/transport/staged.py (see the ordering argument there)."""
import time

import numpy as np
import pytest

import collectives as cc
from collectives.communicator import Communicator
from collectives.transport.local import run_threads as spawn
from collectives.transport.wrapper import TransportWrapper
from tests import cupy_standin


@pytest.fixture
def cp(monkeypatch, tmp_path_factory):
    if cupy_standin.GXX is None:
        pytest.skip("g++ is not installed")
    yield cupy_standin.install(monkeypatch, tmp_path_factory.getbasetemp(), devices=2)
    cupy_standin.clear_caches()


def values(rank, n=1000):
    return np.arange(n, dtype=np.float32) * (rank + 1)


def expected_sum(size, n=1000):
    return sum(values(r, n) for r in range(size))


def test_an_async_allreduce_runs_on_the_callers_gpu(cp):
    """Rank r uses GPU r: the worker thread must reduce on GPU r too (bug 1)."""
    def body(comm):
        cp.cuda.Device(comm.rank).use()
        x = cp.asarray(values(comm.rank))
        comm.allreduce(x, async_op=True).wait()
        return cp.asnumpy(x)
    for result in cc.run_threads(2, body, timeout=20):
        np.testing.assert_array_equal(result, expected_sum(2))


def test_an_async_collective_sees_the_callers_queued_writes(cp):
    """The caller's write of x is still queued on its stream when the collective starts:
    the worker must read x after it (bug 3, per-thread default streams)."""
    def body(comm):
        x = cp.zeros(1000, dtype=np.float32)
        x[...] = cp.asarray(values(comm.rank))      # queued on this thread's stream
        work = comm.allreduce(x, async_op=True)
        work.wait()
        return cp.asnumpy(x)
    for result in cc.run_threads(3, body, timeout=20):
        np.testing.assert_array_equal(result, expected_sum(3))


def test_wait_orders_the_result_for_a_caller_on_another_stream(cp):
    """After wait(), the result is complete for any stream, not only the one the job used."""
    def body(comm):
        x = cp.asarray(values(comm.rank))
        work = comm.allreduce(x, async_op=True)
        with cp.cuda.Stream():
            work.wait()
            return cp.asnumpy(x)
    for result in cc.run_threads(2, body, timeout=20):
        np.testing.assert_array_equal(result, expected_sum(2))


def test_a_collective_after_an_async_one_does_not_reuse_pinned_memory_still_being_copied(cp):
    """The async allreduce's host-to-device copies read pinned memory when they run; the
    next collective (here on the caller's thread, on another stream) must not overwrite
    that memory before (bug 3)."""
    def body(comm):
        a = cp.asarray(values(comm.rank))
        work = comm.allreduce(a, async_op=True)
        while not work.test():                      # the host part is done, the copies queued
            time.sleep(0.001)
        with cp.cuda.Stream():
            b = cp.asarray(-values(comm.rank))
            comm.allreduce(b)
            second = cp.asnumpy(b)
        work.wait()
        return cp.asnumpy(a), second
    for first, second in cc.run_threads(2, body, timeout=20):
        np.testing.assert_array_equal(first, expected_sum(2))
        np.testing.assert_array_equal(second, -expected_sum(2))


class CudaAwareMPI(TransportWrapper):
    """An MPI that takes device pointers: it reads and writes the raw device memory at
    some moment between post and completion, knowing nothing of streams."""

    @property
    def capabilities(self):              # a pipelined tree: chunks reuse scratch halves
        return self.inner.capabilities.replace(pipeline_chunks=4)

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        self.inner.sendrecv(_raw(sendbuf), dest, _raw(recvbuf), source)

    def isend(self, buf, dest):
        return self.inner.isend(_raw(buf), dest)

    def irecv(self, buf, source):
        return self.inner.irecv(_raw(buf), source)


def _raw(buf):
    return buf.host if isinstance(buf, cupy_standin.FakeArray) else buf


def cuda_aware_run(size, body, monkeypatch):
    monkeypatch.setenv("COLLECTIVES_CUDA_AWARE", "1")
    return spawn(size, body, wrap=lambda t: Communicator(CudaAwareMPI(t), timeout=20), timeout=20)


def test_cuda_aware_tree_reduce_waits_for_queued_reductions_before_receiving(cp, monkeypatch):
    """At the root, chunk c+2 lands in the scratch half that chunk c's queued reduction
    still reads: the receive may be posted only after that kernel ran (bug 4)."""
    n = 4000

    def body(comm):
        x = cp.asarray(values(comm.rank, n))
        return cp.asnumpy(comm.reduce(x, root=0, algorithm="tree")) if comm.rank == 0 else \
            comm.reduce(x, root=0, algorithm="tree")
    results = cuda_aware_run(3, body, monkeypatch)
    np.testing.assert_array_equal(results[0], expected_sum(3, n))


def test_cuda_aware_broadcast_receives_after_the_callers_queued_writes(cp, monkeypatch):
    """A non-root rank's own queued write of x must not land after the broadcast's data (bug 4)."""
    def body(comm):
        x = cp.zeros(1000, dtype=np.float32)
        x[...] = cp.asarray(values(comm.rank))      # queued; root's values must win
        comm.broadcast(x, 0, algorithm="tree")
        return cp.asnumpy(x)
    for result in cuda_aware_run(3, body, monkeypatch):
        np.testing.assert_array_equal(result, values(0))


def test_data_parallel_on_two_gpus_matches_the_cpu(cp):
    """DDP's asynchronous bucket all-reduces, rank r on GPU r, gradients packed on the
    caller's stream: the same gradients as on the CPU (bugs 1 and 3 together)."""
    import nn
    from nn import functional as F
    from nn.parallel import DistributedDataParallel

    def body(comm, on_gpu):
        if on_gpu:
            cp.cuda.Device(comm.rank).use()
        nn.manual_seed(0)
        module = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        if on_gpu:
            for p in module.parameters():
                p.data = cp.asarray(p.data)
        model = DistributedDataParallel(module, comm, bucket_cap_mb=0.0005)
        rng = np.random.default_rng(comm.rank)
        x = rng.standard_normal((6, 8)).astype(np.float32)
        target = rng.standard_normal((6, 4)).astype(np.float32)
        if on_gpu:
            x, target = cp.asarray(x), cp.asarray(target)
        F.mse_loss(model(nn.Tensor(x)), nn.Tensor(target)).backward()
        return [cp.asnumpy(p.grad) if on_gpu else p.grad.copy() for p in module.parameters()]

    cpu = cc.run_threads(2, body, False, timeout=20)
    gpu = cc.run_threads(2, body, True, timeout=20)
    for rank in range(2):
        for a, b in zip(cpu[rank], gpu[rank]):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_a_gpu_that_refuses_the_process_leaves_the_rank_on_the_host(cp, monkeypatch):
    """Device.use() failing (a GPU in exclusive-process mode already taken) must not stop
    a job that may use host buffers only (bug 7)."""
    from collectives.buffers import select_device

    def refuse(self):
        raise RuntimeError("cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or unavailable")
    monkeypatch.setattr(cupy_standin.Device, "use", refuse)
    assert select_device(1) is None


def test_select_device_makes_the_local_ranks_gpu_current(cp):
    from collectives.buffers import select_device
    assert select_device(3) == 1 and cp.cuda.runtime.getDevice() == 1
