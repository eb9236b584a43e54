"""Under a real mpirun: split communicators on one node get an MPI shared window of their
own, run oneshot/twoshot on it, and give it back when freed (threads, file descriptors
and /dev/shm files stay as they were over many split + free cycles; tests.lifetime_check
runs 2,500 with a segment each, see test_lifetimes)."""
import pytest

from tests.mpirun import mpirun

pytestmark = pytest.mark.mpi


def shm_split_ok(result):
    line = next((text for text in result.stdout.splitlines() if text.startswith("shm split ok")), None)
    assert result.returncode == 0 and line, result.stdout[-2000:] + result.stderr[-2000:]
    threads, fds, shm, threads_after, fds_after, shm_after = map(int, line.split()[3:])
    return (threads, fds, shm), (threads_after, fds_after, shm_after)


def test_split_communicators_use_their_own_segment_and_free_it_cycle_after_cycle():
    # (4 ranks on few cores make each cycle's MPI calls slow; tests.lifetime_check runs 2,500)
    before, after = shm_split_ok(mpirun(4, "-m", "tests.shm_split_check", "200"))
    assert before == after


def test_on_emulated_nodes_only_splits_inside_a_node_get_a_segment():
    before, after = shm_split_ok(mpirun(4, "-m", "tests.shm_split_check", "100", env={"COLLECTIVES_NODES": "2"}))
    assert before == after


def test_a_split_collected_on_one_rank_alone_does_not_wait_for_the_others():
    result = mpirun(2, "-m", "tests.split_collected_check", timeout=120)
    assert result.returncode == 0 and "split collected ok" in result.stdout, \
        result.stdout[-2000:] + result.stderr[-2000:]
