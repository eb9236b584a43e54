"""bench.kernels without a GPU: it says why it cannot measure and exits 0; its layouts are
what the issue asks for. (tests/test_gpu.py runs it for real where there is a GPU.)"""
import os
import subprocess
import sys

import pytest

from bench import kernels as bench_kernels


def test_without_a_gpu_it_prints_one_line_and_exits_0():
    if _has_gpu():
        pytest.skip("a GPU is present: tests/test_gpu.py runs the benchmark for real")
    result = subprocess.run([sys.executable, "-m", "bench.kernels", "-n", "3"], capture_output=True,
                            text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "needs CuPy and a CUDA GPU" in lines[0]


def _has_gpu():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def test_the_layouts_are_100_and_5000_nonempty_arrays_filling_the_bucket():
    total = bench_kernels.BUCKET_BYTES // 4
    sizes = bench_kernels.layouts(total)
    assert [len(s) for s in sizes.values()] == [100, 5000]
    for layout in sizes.values():
        assert sum(layout) == total and min(layout) > 0
