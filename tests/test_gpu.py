"""Collectives on CuPy arrays (skipped without CuPy and a CUDA device)."""
import pytest

from tests.mpirun import mpirun

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install '.[gpu]')")
try:
    DEVICES = cupy.cuda.runtime.getDeviceCount()
except Exception:       # CuPy without a driver or a device
    DEVICES = 0
pytestmark = [pytest.mark.gpu, pytest.mark.mpi,
              pytest.mark.skipif(DEVICES == 0, reason="no CUDA device")]


@pytest.mark.parametrize("n", [2, 4])
def test_every_collective_on_cupy_arrays_matches_the_numpy_path(n):
    result = mpirun(n, "-m", "tests.gpu_check", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"gpu_check ok {n}" in result.stdout


def test_gpu_benchmark_runs_and_checks():
    result = mpirun(2, "-m", "bench.allreduce", "--device", "gpu", "-b", "8", "-e", "1M", "-f", "32",
                    "-n", "3", "-w", "1", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# Out of bounds values : 0 OK" in result.stdout
    assert "nccl" in result.stdout          # either its rows or the line saying why there are none


def test_kernel_benchmark_runs_on_the_gpu():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "bench.kernels", "-n", "5", "--rounds", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "pack, 5000 arrays" in result.stdout and "device-to-device copy" in result.stdout


def test_data_parallel_on_the_gpu_matches_the_cpu():
    import numpy as np

    import collectives as cc
    import nn
    from nn import functional as F
    from nn.parallel import DistributedDataParallel

    def body(comm, on_gpu, compression):
        nn.manual_seed(0)
        module = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        if on_gpu:
            for p in module.parameters():
                p.data = cupy.asarray(p.data)
        model = DistributedDataParallel(module, comm, bucket_cap_mb=0.0005, compression=compression)
        rng = np.random.default_rng(comm.rank)
        x = rng.standard_normal((6, 8)).astype(np.float32)
        y = rng.integers(0, 4, 6)
        x = cupy.asarray(x) if on_gpu else x
        F.cross_entropy(model(nn.Tensor(x)), cupy.asarray(y) if on_gpu else y).backward()
        return [cupy.asnumpy(p.grad) if on_gpu else p.grad.copy() for p in module.parameters()]

    for compression in (None, "fp16"):
        cpu = cc.run_threads(2, body, False, compression)
        gpu = cc.run_threads(2, body, True, compression)
        for a, b in zip(cpu[0], gpu[0]):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
