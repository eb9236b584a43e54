"""No silent hangs: real MPI jobs with a 2-second timeout, each ending in seconds with a
message on every surviving rank that names the stuck rank and call."""
import re
import time

import pytest

from tests.mpirun import mpirun

pytestmark = [pytest.mark.mpi, pytest.mark.faults]


def run_case(case, tmp_path, cleanup=False, n=4):
    env_args = ("-m", "tests.fault_cases", case)
    start = time.monotonic()
    result = mpirun(n, *env_args, timeout=90, launcher_args=() if cleanup else ("-disable-auto-cleanup",),
                    env={"COLLECTIVES_TIMEOUT": "2", "COLLECTIVES_FLIGHT_DIR": str(tmp_path)})
    elapsed = time.monotonic() - start
    faults = {int(m.group(1)): m.group(0) for m in re.finditer(r"^FAULT rank (\d+): .*$", result.stdout, re.M)}
    return result, faults, elapsed


def test_a_rank_that_skips_a_collective_is_named_on_every_rank(tmp_path):
    result, faults, elapsed = run_case("skip", tmp_path)
    assert result.returncode != 0 and elapsed < 30
    assert sorted(faults) == [0, 1, 2, 3], result.stdout + result.stderr
    assert "ranks [1]: barrier()" in result.stdout          # rank 1 moved on to the next call
    assert "#2" in faults[0] and "CollectiveTimeout" in faults[0]


def test_collectives_called_in_another_order_are_reported(tmp_path):
    result, faults, elapsed = run_case("order", tmp_path)
    assert result.returncode != 0 and elapsed < 30
    assert sorted(faults) == [0, 1, 2, 3]
    assert "different order" in result.stdout
    # the flight summary after a timeout, or the shared-memory algorithms' own mismatch
    # (which every rank raises at its first sync point) naming rank 2 or 3's call #2
    assert re.search(r"ranks \[2, 3\]: broadcast", result.stdout) or \
        re.search(r"rank [23] is in call #2", result.stdout), result.stdout


def test_another_count_is_caught_before_data_moves_in_debug_mode(tmp_path):
    result, faults, elapsed = run_case("count-debug", tmp_path)
    assert sorted(faults) == [0, 1, 2, 3] and elapsed < 30
    assert all("CollectiveMismatch" in line for line in faults.values())
    assert "ranks [3]: allreduce(count=999" in result.stdout


def test_another_count_is_caught_without_debug_mode(tmp_path):
    result, faults, elapsed = run_case("count", tmp_path)
    assert result.returncode != 0 and elapsed < 30
    assert sorted(faults) == [0, 1, 2, 3]
    assert "ranks [3]: allreduce(count=999" in result.stdout


def test_a_rank_sleeping_past_the_timeout_is_named(tmp_path):
    result, faults, elapsed = run_case("sleep", tmp_path)
    assert result.returncode != 0 and elapsed < 30
    assert {1, 2, 3} <= set(faults)
    assert "rank 0 sent no flight record: it is busy elsewhere" in faults.get(1, "") + result.stdout


def test_a_rank_that_raises_and_exits_is_named(tmp_path):
    result, faults, elapsed = run_case("raise", tmp_path)
    assert result.returncode != 0 and elapsed < 30
    assert {0, 2, 3} <= set(faults)
    assert "rank 1 never entered #2 allreduce" in result.stdout
    assert "and then it raised RuntimeError: rank 1 gives up" in result.stdout


@pytest.mark.parametrize("cleanup", [False, True])
def test_a_rank_that_calls_sys_exit_0_mid_training_ends_the_job_nonzero(tmp_path, cleanup):
    result, faults, elapsed = run_case("exit0", tmp_path, cleanup=cleanup)
    assert result.returncode != 0 and elapsed < 30          # before: rank 1 hung in MPI_Finalize
    assert faults, result.stdout + result.stderr
    if not cleanup:       # every rank reports; with auto-cleanup the launcher may end them first
        assert sorted(faults) == [0, 2, 3]
        assert "and then it exited (its program ended)" in result.stdout
        assert "rank 1: at exit, waiting for every rank to finish, but rank(s) [0, 2, 3]" in result.stderr


def test_ranks_that_catch_their_error_and_end_normally_still_end_the_job_nonzero(tmp_path):
    result, _, elapsed = run_case("exit0-quiet", tmp_path)
    assert result.returncode != 0 and elapsed < 30
    for rank in (0, 2, 3):
        assert f"rank {rank}: exiting with collectives unfinished or failed" in result.stderr


@pytest.mark.parametrize("case, culprit, call", [
    ("op", 1, "op=max"), ("dtype", 2, "dtype=int32"), ("root", 3, "root=1")])
def test_a_rank_calling_differently_is_named_without_debug_mode(tmp_path, case, culprit, call):
    result, faults, elapsed = run_case(case, tmp_path)
    assert result.returncode != 0 and elapsed < 30
    mismatches = {rank: line for rank, line in faults.items() if "CollectiveMismatch" in line}
    assert mismatches, result.stdout + result.stderr
    for line in mismatches.values():
        assert re.search(rf"ranks {culprit} and \d+ called differently|ranks \d+ and {culprit} called "
                         "differently", line), line
        assert call in line, line


def test_a_killed_rank_ends_the_job_with_a_nonzero_exit(tmp_path):
    # MPICH's launcher tears the whole job down as soon as a rank is SIGKILLed (and its
    # -disable-auto-cleanup mode crashes in that case), so the survivors cannot print their
    # own error, and the PID it reports is not always the dead rank's. What we check: the
    # others were waiting inside the collective, nothing hangs, and the exit is non-zero.
    result, faults, elapsed = run_case("kill", tmp_path, cleanup=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and elapsed < 30
    assert "rank 1 is pid" in output and "no fault" not in output
    assert "BAD TERMINATION" in output and "signal 9" in output
