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


def test_a_rank_passing_the_wrong_size_makes_every_rank_raise_not_hang():
    output = run_section("fault")
    raised = dict(re.findall(r"^rank (\d) raised (\w+): rank \1: allreduce", output, re.M))
    assert sorted(raised) == [str(r) for r in range(RANKS)], output
    assert set(raised.values()) <= {"CollectiveTimeout", "TransportError", "CollectiveMismatch"}
