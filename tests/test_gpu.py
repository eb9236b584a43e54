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
