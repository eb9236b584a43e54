"""The PyTorch backend under real mpirun jobs (one job per behaviour; tests.torch_check
holds the checks): every operation against gloo on the same inputs, DDP and FSDP2
training against one process on the global batch, and a mismatched call."""
import re

import pytest

from tests.mpirun import mpirun

pytest.importorskip("torch")
pytestmark = pytest.mark.mpi

RANKS = 4


def run_section(section):
    result = mpirun(RANKS, "-m", "tests.torch_check", section)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"torch_check ok {section}" in result.stdout
    return result.stdout


def test_every_operation_agrees_with_gloo_on_the_same_inputs():
    run_section("ops")


def test_ddp_and_fsdp2_reach_the_single_process_weights_like_gloo():
    run_section("train")


@pytest.fixture(scope="module")
def fault_job():
    """One `tests.torch_check fault` job: point-to-point sizes that disagree, then a
    mismatched all-reduce."""
    return mpirun(RANKS, "-m", "tests.torch_check", "fault")


def test_a_rank_passing_the_wrong_size_makes_every_rank_raise_not_hang(fault_job):
    # the job ends (mpirun's timeout would raise otherwise); its exit code is the engine's
    # choice after a failed collective (non-zero: it leaves without MPI_Finalize)
    result = fault_job
    output = result.stdout
    assert "torch_check ok fault" in output, output[-3000:] + result.stderr[-3000:]
    raised = dict(re.findall(r"rank (\d) raised (\w+): rank \1: ", output))
    assert sorted(raised) == [str(r) for r in range(RANKS)], output
    assert set(raised.values()) <= {"CollectiveTimeout", "TransportError", "CollectiveMismatch"}


def test_a_recv_of_another_size_than_the_send_raises_naming_both_ranks_not_mpi4py(fault_job):
    # before the mismatched all-reduce, rank 0 sends rank 1 four doubles where it
    # expects two, rank 2 sends rank 3 four where it expects eight; the group goes on
    output = fault_job.stdout
    receivers = dict(re.findall(r"^rank (\d) recv raised (.*)$", output, re.M))
    assert receivers == {
        "1": "MessageError: rank 0 sent rank 1 a message longer than the 16 bytes it expected",
        "3": "MessageError: rank 2 sent 32 bytes to rank 3, which expected 64"}, output


def test_torch_ddp_example_trains_the_digits_mlp_with_backend_collectives():
    result = mpirun(RANKS, "examples/torch_ddp.py", "--backend", "collectives", "--epochs", "3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    accuracy = float(re.search(r"final test accuracy ([\d.]+)% with backend collectives", result.stdout).group(1))
    assert accuracy > 90
    assert re.search(r"median step [\d.]+ ms", result.stdout)


def test_bench_torch_times_every_backend_and_checks_results():
    result = mpirun(2, "-m", "bench.torch", "--hidden", "64", "--layers", "1", "--rounds", "1", "--steps", "1",
                    "-b", "4K", "-e", "64K", "--iters", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = re.findall(r"^\s+(gloo|collectives|no all-reduce)\s+[\d.]+\s+[\d.]+x\s+[\d.]+\s+[\d.]+$",
                      result.stdout, re.M)
    assert rows == ["gloo", "collectives", "no all-reduce"], result.stdout
    assert re.search(r"^# DDP's gradient buckets \(bytes, in all-reduce order\): \d+", result.stdout, re.M)
    sizes = re.findall(r"^\s+(\d+) KiB .* (yes|NO)$", result.stdout, re.M)
    assert sizes == [("4", "yes"), ("16", "yes"), ("64", "yes")], result.stdout
