"""examples/train_gpt.py: the text ships with Python, tensor x data parallel training
follows the single-process run, and a killed run resumes to the same weights."""
import os
import re
import sys

import numpy as np
import pytest

import collectives as cc
from tests.mpirun import mpirun

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import train_gpt  # noqa: E402

TINY = ["--layers", "1", "--heads", "4", "--dim", "16", "--block-size", "16", "--batch-size", "4",
        "--steps", "6", "--eval-every", "3", "--sample-chars", "8"]


def test_the_text_ships_with_python_and_round_trips():
    text = train_gpt.load_text()
    assert len(text) > 100_000 and set(text) <= set(train_gpt.ALPHABET)
    assert len(train_gpt.ALPHABET) == len(set(train_gpt.ALPHABET)) == 96
    assert train_gpt.decode(train_gpt.encode(text[:500])) == text[:500]


@pytest.fixture(scope="module")
def single_process_history():
    return cc.run_threads(1, train_gpt.train, train_gpt.parse(TINY + ["--tp", "1"]), lambda *a: None)[0][0]


@pytest.mark.parametrize("layout", [["--tp", "2"], ["--tp", "2", "--sequence-parallel"], ["--tp", "4"]])
def test_parallel_run_follows_the_single_process_run(layout, single_process_history):
    messages, single = [], single_process_history
    runs = cc.run_threads(4, train_gpt.train, train_gpt.parse(TINY + layout), messages.append, timeout=120)
    history, sample, digest = runs[0]
    assert [h["step"] for h in history] == [3, 6] and history[-1]["train_loss"] < history[0]["train_loss"]
    for ours, theirs in zip(history, single):             # float32: equal up to rounding
        assert abs(ours["train_loss"] - theirs["train_loss"]) < 1e-4 * theirs["train_loss"]
        assert abs(ours["val_loss"] - theirs["val_loss"]) < 1e-4 * theirs["val_loss"]
    assert len({run[2] for run in runs}) == 1 and sample.startswith("Return the ") and len(sample) == 19
    assert any("sample" in m for m in messages)


@pytest.mark.mpi
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    checkpoint = str(tmp_path / "gpt.npz")
    args = ["examples/train_gpt.py", "--tp", "2", *TINY, "--checkpoint-every", "3"]
    straight = mpirun(2, *args)
    assert straight.returncode == 0, straight.stderr
    killed = mpirun(2, *args, "--checkpoint", checkpoint, "--die-at-step", "5")
    assert killed.returncode != 0 and os.path.exists(checkpoint + ".tp1of2")
    resumed = mpirun(2, *args, "--checkpoint", checkpoint, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 3" in resumed.stdout

    def digest(out):
        return re.search(r"weights digest (\w+)", out).group(1)
    assert digest(resumed.stdout) == digest(straight.stdout)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    args = train_gpt.parse(["--steps", "100", "--lr", "1.0"])
    rates = [train_gpt.learning_rate(step, args) for step in range(100)]
    assert rates[0] == pytest.approx(0.2) and rates[4] == pytest.approx(1.0)
    assert np.all(np.diff(rates[4:]) <= 0) and rates[-1] == pytest.approx(0.1, abs=1e-3)
