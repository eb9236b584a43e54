"""How kernels.cuda compiles and launches, on the CPU through the CuPy stand-in (bug 7):
compiled modules come from CuPy's disk cache in a later run, and grids are sized by the
occupancy API rather than by a guess of 8 blocks per multiprocessor."""
import numpy as np
import pytest

import kernels
from kernels import cuda
from tests import cupy_standin


@pytest.fixture
def cp(monkeypatch, tmp_path_factory):
    if cupy_standin.GXX is None:
        pytest.skip("g++ is not installed")
    yield cupy_standin.install(monkeypatch, tmp_path_factory.getbasetemp())
    cupy_standin.clear_caches()


def test_a_later_run_loads_the_kernels_from_cupys_disk_cache(cp):
    x = cp.asarray(np.ones(100, np.float32))
    kernels.reduce_into(x, x, "sum")
    compiled = len(cp.world.compiles)
    cupy_standin.clear_caches()                       # what a new process starts with
    kernels.reduce_into(x, x, "sum")
    assert len(cp.world.compiles) == compiled         # nothing compiled again
    assert cp.asnumpy(x).tolist() == [4.0] * 100


def test_every_compile_gets_cupys_options_after_ours(cp):
    kernels.reduce_into(cp.asarray(np.ones(3)), cp.asarray(np.ones(3)), "max")
    options, names = cp.world.compiles[-1]
    assert options == cuda.OPTIONS + cupy_standin.CUPY_APPENDED_OPTIONS and names is None


def test_the_grid_is_what_the_occupancy_api_allows(cp):
    n = 50 * cuda.MAX_ROWS * cuda.THREADS * 4                  # far more chunks than blocks
    x = cp.asarray(np.ones(n, np.float32))
    kernels.reduce_into(x, x, "sum")
    arrays = [cp.asarray(np.ones(n // 4, np.float32)) for _ in range(4)]
    kernels.pack(arrays, x)
    full = cupy_standin.SMS * cupy_standin.BLOCKS_PER_SM
    assert [grid for _, grid in cp.world.launches] == [(full,), (full,)]
    assert cp.asnumpy(x).tolist() == [1.0] * n


def test_every_array_of_a_multi_array_pack_takes_a_vector_path(cp):
    """300 arrays of uneven sizes: after the first size that is not a multiple of the vector
    width, flat offsets and array addresses no longer share their alignment; each array must
    still move (almost) all its elements in 16-byte vectors, not one by one (bug 7)."""
    rng = np.random.default_rng(0)
    hosts = [rng.standard_normal(int(n)).astype(np.float32) for n in rng.integers(500, 3000, 300)]
    arrays = [cp.asarray(h) for h in hosts]
    bucket = cp.zeros(sum(h.size for h in hosts), dtype=np.float32)
    kernels.pack(arrays, bucket)
    assert cp.asnumpy(bucket).tobytes() == np.concatenate(hosts).tobytes()
    both, stores_only, scalars = cp.world.path_elements
    assert scalars < 0.02 * bucket.size and both + stores_only + scalars == bucket.size


def test_kernels_running_in_two_threads_at_once_stay_exact(cp):
    """Ranks are threads, and each runs its stream's kernels when it synchronises, so two
    kernels can run at once (ctypes lets go of the GIL). The stand-in's block and thread
    indices are per host thread: shared ones let one kernel's loop move the other's index,
    and elements went missing (a DDP test saw a rank's gradient with 4 values unsent)."""
    import threading
    rng = np.random.default_rng(1)
    hosts = [rng.standard_normal(int(n)).astype(np.float32) for n in rng.integers(20000, 60000, 24)]
    expected = np.concatenate(hosts).tobytes()
    wrong, errors = [], []

    def rank(name):
        try:
            arrays = [cp.asarray(h) for h in hosts]        # each thread runs its own stream
            for _ in range(6):
                bucket = cp.zeros(sum(h.size for h in hosts), dtype=np.float32)
                kernels.pack(arrays, bucket)
                if cp.asnumpy(bucket).tobytes() != expected:
                    wrong.append(name)
        except Exception as error:                      # pragma: no cover (shown below)
            errors.append(error)
    threads = [threading.Thread(target=rank, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong
