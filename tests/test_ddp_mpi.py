"""Data-parallel training under real mpirun: the digits example, and a run killed with
SIGKILL mid-training that resumes from its checkpoint to the same weights, bit for bit."""
import re

import pytest

from tests.mpirun import mpirun

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
pytestmark = pytest.mark.mpi


def digest(output):
    return re.search(r"weights digest (\w+)", output).group(1)


def test_digits_ddp_trains_and_prints_on_rank_zero_only():
    result = mpirun(4, "examples/train_digits_ddp.py", "--epochs", "4")
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^epoch ", result.stdout, re.M)) == 4          # one line per epoch, not per rank
    accuracy = float(re.search(r"final test accuracy ([\d.]+)%", result.stdout).group(1))
    assert accuracy > 93


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    common = ("examples/train_digits_ddp.py", "--epochs", "3", "--checkpoint-every", "20")
    straight = mpirun(4, *common, "--checkpoint", str(tmp_path / "straight.npz"))
    assert straight.returncode == 0, straight.stderr
    checkpoint = str(tmp_path / "killed.npz")
    killed = mpirun(4, *common, "--checkpoint", checkpoint, "--die-at-step", "73")
    assert killed.returncode != 0 and "final test accuracy" not in killed.stdout
    resumed = mpirun(4, *common, "--checkpoint", checkpoint, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 60" in resumed.stdout
    assert digest(resumed.stdout) == digest(straight.stdout)
