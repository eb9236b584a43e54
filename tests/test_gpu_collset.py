"""All-to-all, gather, scatter and the scans on CuPy arrays through the GPU path, checked
on the CPU with the NumPy-backed CuPy stand-in (tests/cupy_standin.py: two "GPUs",
deferred streams, staging through pinned memory); and new dtypes refused on the GPU
where its reduction kernel lacks them."""
import numpy as np
import pytest

import collectives as cc
from tests import cupy_standin
from tests.reference import assert_matches, make_input


@pytest.fixture
def cp(monkeypatch, tmp_path_factory):
    if cupy_standin.GXX is None:
        pytest.skip("g++ is not installed")
    yield cupy_standin.install(monkeypatch, tmp_path_factory.getbasetemp(), devices=2)
    cupy_standin.clear_caches()


def test_new_collectives_on_device_arrays(cp):
    size, count = 2, 1001
    inputs = [make_input(r, count, "float32", "sum") for r in range(size)]

    def body(comm):
        cp.cuda.Device(comm.rank).use()
        x = cp.asarray(inputs[comm.rank])
        got = {a: cp.asnumpy(comm.alltoall(x, algorithm=a)) for a in comm.algorithms("alltoall")}
        got["gather"] = comm.gather(x, 1)
        got["gather"] = None if got["gather"] is None else cp.asnumpy(got["gather"])
        got["scatter"] = cp.asnumpy(comm.scatter(x, 0, async_op=True).wait())
        got["scan"] = cp.asnumpy(comm.scan(x.copy()))
        got["alltoallv"] = cp.asnumpy(comm.alltoallv(x[:3 * size], [3] * size, [3] * size))
        return got
    results = cc.run_threads(size, body, timeout=30)
    offsets = cc.partition(count, size)
    for r, got in enumerate(results):
        expected = np.concatenate([x[offsets[r]:offsets[r + 1]] for x in inputs])
        for a in ("pairwise", "bruck", "linear"):
            assert got[a].tobytes() == expected.tobytes(), a
        assert (got["gather"] is None) == (r != 1)
        if r == 1:
            assert got["gather"].tobytes() == np.concatenate(inputs).tobytes()
        assert got["scatter"].tobytes() == inputs[0][offsets[r]:offsets[r + 1]].tobytes()
        assert_matches(got["scan"], inputs[:r + 1], "sum")
        assert got["alltoallv"].tobytes() == np.concatenate([x[3 * r:3 * r + 3] for x in inputs]).tobytes()


def test_device_reductions_of_dtypes_without_a_kernel_are_refused(cp):
    def body(comm):
        with pytest.raises(TypeError, match="on the GPU are not supported"):
            comm.scan(cp.asarray(np.ones(3, np.complex64)))
        return cp.asnumpy(comm.alltoall(cp.asarray(np.ones(2, np.complex64))))    # movement is fine
    assert all(r.dtype == np.complex64 for r in cc.run_threads(2, body, timeout=30))


def test_send_and_recv_of_device_arrays_go_through_host_buffers(cp):
    def body(comm):
        cp.cuda.Device(comm.rank).use()
        if comm.rank == 0:
            comm.send(cp.asarray(np.arange(5.0)), 1)
            comm.send(cp.asarray(np.arange(5.0) * 2), 1, async_op=True).wait()
            return None
        first = cp.zeros(5)
        comm.recv(first, 0)
        second = comm.recv(cp.zeros(5), 0, async_op=True)
        return cp.asnumpy(first), cp.asnumpy(second.wait())
    first, second = cc.run_threads(2, body, timeout=30)[1]
    assert first.tolist() == [0, 1, 2, 3, 4] and second.tolist() == [0, 2, 4, 6, 8]


def test_device_buffers_are_offered_every_algorithm_but_the_shared_segment_ones(cp):
    """comm.algorithms(c, device=True) lists what GPU buffers can use, every one of them runs
    on them, and a shared-segment algorithm asked for by name is a clear error."""
    size, count = 3, 1001
    inputs = [make_input(r, count, "float32", "sum") for r in range(size)]

    def body(comm):
        host, device = comm.algorithms("allreduce"), comm.algorithms("allreduce", device=True)
        assert {"oneshot", "twoshot"} <= set(host), host
        assert device == [a for a in host if a not in ("oneshot", "twoshot", "shm_ring")], device
        for collective in ("reduce_scatter", "allgather", "broadcast", "reduce"):
            assert "shm" in comm.algorithms(collective)
            assert "shm" not in comm.algorithms(collective, device=True)
        x = cp.asarray(inputs[comm.rank])
        with pytest.raises(ValueError, match="'oneshot' needs host \\(NumPy\\) buffers.*'ring'"):
            comm.allreduce(x, algorithm="oneshot")
        with pytest.raises(ValueError, match="unknown allreduce algorithm 'butterfly'"):
            comm.allreduce(x, algorithm="butterfly")
        return {a: cp.asnumpy(comm.allreduce(x.copy(), algorithm=a)) for a in device}
    for got in cc.run_threads(size, body, timeout=60):
        assert got
        for name, result in got.items():
            assert_matches(result, inputs, "sum", name)
