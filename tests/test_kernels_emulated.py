"""The GPU tests of tests/test_kernels_cuda.py without a GPU: the kernels' C++ run on the CPU,
through the CuPy stand-in of tests/cupy_standin.py (see there for what it can and cannot show)."""
import pytest

from tests import cupy_standin
from tests.test_kernels_cuda import *  # noqa: F401,F403  (the tests, run again here)


@pytest.fixture
def cp(monkeypatch, tmp_path_factory):             # replaces the real-CuPy fixture imported above
    if cupy_standin.GXX is None:
        pytest.skip("g++ is not installed")
    yield cupy_standin.install(monkeypatch, tmp_path_factory.getbasetemp(), devices=2)
    cupy_standin.clear_caches()
