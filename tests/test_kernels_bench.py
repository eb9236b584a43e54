"""bench.kernels without a GPU: it says why it cannot measure and exits 0; its layouts are
what the issue asks for. (tests/test_gpu.py runs it for real where there is a GPU.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import kernels as bench_kernels
from tests import cupy_standin


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


def test_time_ms_uses_only_what_cupy_offers(monkeypatch, tmp_path_factory):
    """time_ms through the CuPy stand-in, whose events have CuPy's API (`done`, not the
    `query()` it once called): launches timed between two events (the busy-wait that
    queues them is left out: its kernel is device-only code)."""
    if cupy_standin.GXX is None:
        pytest.skip("g++ is not installed")
    cp = cupy_standin.install(monkeypatch, tmp_path_factory.getbasetemp())
    monkeypatch.setattr(bench_kernels.cuda, "busy_wait", lambda seconds: None)   # device-only
    try:
        import kernels
        x, y = cp.asarray(np.ones(1000, np.float32)), cp.asarray(np.ones(1000, np.float32))
        ms, ran_dry = bench_kernels.time_ms(cp, lambda: kernels.reduce_into(x, y, "sum"), 3, 0.0)
        assert ms == 0.0 and isinstance(ran_dry, bool)       # the stand-in has no clock
        assert float(cp.asnumpy(x)[0]) == 4.0                # three launches ran, in order
    finally:
        cupy_standin.clear_caches()
