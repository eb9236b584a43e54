"""The shared segment under real mpirun jobs: faults end in errors naming the rank, and
nothing is left in /dev/shm after a normal exit, an exception or a timeout."""
import os
import re
import time

import pytest

from tests.mpirun import mpirun

pytestmark = pytest.mark.mpi


def run_case(case, algorithm, tmp_path):
    before = set(os.listdir("/dev/shm"))
    start = time.monotonic()
    result = mpirun(4, "-m", "tests.shm_cases", case, algorithm, timeout=90,
                    launcher_args=("-disable-auto-cleanup",),
                    env={"COLLECTIVES_TIMEOUT": "2", "COLLECTIVES_FLIGHT_DIR": str(tmp_path)})
    elapsed = time.monotonic() - start
    mapped = set(re.findall(r"^SEGMENT (\S+)", result.stdout, re.M))
    faults = {int(m.group(1)): m.group(0) for m in re.finditer(r"^FAULT rank (\d+): .*$", result.stdout, re.M)}
    after = set(os.listdir("/dev/shm"))
    return result, faults, elapsed, mapped, before, after


def assert_nothing_left(mapped, before, after):
    assert mapped, "the job mapped no /dev/shm file: no segment was made"
    left = {os.path.basename(path.split()[0]) for path in mapped} & (after - before)
    assert not left, f"left in /dev/shm: {sorted(left)}"
    assert not any(os.path.exists(path.split()[0]) for path in mapped)


@pytest.mark.parametrize("algorithm", ["oneshot", "twoshot", "shm_ring"])
def test_normal_exit_leaves_nothing_in_dev_shm(algorithm, tmp_path):
    result, faults, elapsed, *listing = run_case("ok", algorithm, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("no fault") == 4
    assert_nothing_left(*listing)


def test_an_exception_leaves_nothing_in_dev_shm(tmp_path):
    result, faults, elapsed, *listing = run_case("raise", "twoshot", tmp_path)
    assert result.returncode != 0 and elapsed < 30
    assert {0, 2, 3} <= set(faults), result.stdout + result.stderr
    assert all("rank 1" in faults[r] for r in (0, 2, 3))
    assert_nothing_left(*listing)


@pytest.mark.parametrize("algorithm", ["oneshot", "twoshot", "shm_ring"])
def test_a_stalled_rank_is_named_and_a_timeout_leaves_nothing(algorithm, tmp_path):
    result, faults, elapsed, *listing = run_case("sleep", algorithm, tmp_path)
    assert result.returncode != 0 and elapsed < 30
    assert {1, 2, 3} <= set(faults), result.stdout + result.stderr
    for r in (1, 2, 3):
        assert "CollectiveTimeout" in faults[r] and "shared memory from rank 0" in faults[r]
    assert_nothing_left(*listing)


def test_a_rank_in_another_call_is_named(tmp_path):
    result, faults, elapsed, *listing = run_case("count", "oneshot", tmp_path)
    assert result.returncode != 0 and elapsed < 30
    assert sorted(faults) == [0, 1, 2, 3], result.stdout + result.stderr
    assert all("CollectiveMismatch" in faults[r] and "Rank 3 passed count=999" in faults[r] for r in (0, 1, 2))
    assert "CollectiveMismatch" in faults[3]


def test_emulated_nodes_under_mpirun_use_a_segment_each_and_match_mpi():
    result = mpirun(4, "-m", "tests.shm_nodes_check", env={"COLLECTIVES_NODES": "2"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "shm nodes ok 4" in result.stdout


@pytest.mark.parametrize("size, seed", [(3, 1), (4, 2)])
def test_a_long_random_sequence_of_shared_memory_calls_is_exact_under_mpirun(size, seed):
    # 300 calls on one communicator with a 256 KiB segment: staging halves, rounds, sync
    # counters and heap reused across every kind of call (tests/shm_sequence_check.py)
    result = mpirun(size, "-m", "tests.shm_sequence_check", str(seed), "300", str(256 << 10), timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"shm sequence ok {size}" in result.stdout, result.stdout[-2000:]


INIT_REFUSED = """
from mpi4py import MPI                       # MPI_Init: MPI's own /dev/shm files exist from here
from tests.shm_cases import mapped_shm_files
for path in mapped_shm_files():
    print(f"SEGMENT {path}", flush=True)
import collectives as cc
cc.init()
"""


def test_a_setting_init_refuses_leaves_nothing_in_dev_shm():
    # cc.init checks its arguments before it makes an uncaught exception end the rank
    # without MPI_Finalize; MPICH's own queue file had stayed behind
    result = mpirun(3, "-c", INIT_REFUSED, env={"COLLECTIVES_NODES": "2"}, timeout=60)
    assert result.returncode != 0
    assert "nodes must be a positive int dividing the 3 ranks" in result.stderr, result.stderr[-2000:]
    mapped = set(re.findall(r"^SEGMENT (\S+)", result.stdout, re.M))
    assert mapped, "the job mapped no /dev/shm file"
    assert not [path for path in mapped if os.path.exists(path)]
