"""Checkpoint files: round trip, atomic write, and clear errors for bad files."""
import os

import numpy as np
import pytest

from nn.parallel.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


class Holder:
    """Anything with state_dict/load_state_dict: stands in for a module or an optimizer."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state

    def load_state_dict(self, state):
        self.state = state


class Sampler(Holder):
    pass


def example():
    model = Holder({"0.weight": np.arange(6.0).reshape(2, 3), "0.bias": np.ones(2, np.float32)})
    optimizer = Holder({"state": {0: {"momentum_buffer": np.full(3, 0.5)}, 1: {}},
                        "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]})
    sampler = Sampler({"epoch": 3, "consumed": 40, "seed": 0})
    return model, optimizer, sampler


def test_round_trip_restores_everything_bit_for_bit(tmp_path):
    model, optimizer, sampler = example()
    path = save_checkpoint(tmp_path / "ckpt.npz", model, optimizer, sampler, step=17)
    fresh_model, fresh_optimizer, fresh_sampler = Holder({}), Holder({}), Sampler({})
    assert load_checkpoint(path, fresh_model, fresh_optimizer, fresh_sampler) == 17
    for key, value in model.state.items():
        assert fresh_model.state[key].tobytes() == value.tobytes() and fresh_model.state[key].dtype == value.dtype
    assert fresh_optimizer.state["param_groups"] == optimizer.state["param_groups"]
    assert np.array_equal(fresh_optimizer.state["state"][0]["momentum_buffer"], np.full(3, 0.5))
    assert fresh_sampler.state == sampler.state
    assert os.listdir(tmp_path) == ["ckpt.npz"]                  # no temporary file left behind


def test_truncated_file_is_a_clear_error(tmp_path):
    model, optimizer, sampler = example()
    path = save_checkpoint(tmp_path / "ckpt.npz", model, optimizer, sampler, step=1)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        read_checkpoint(path)


def test_foreign_files_are_rejected(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(CheckpointError, match="no 'meta' entry"):
        read_checkpoint(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_checkpoint(tmp_path / "text.npz")


def test_missing_parts_are_named(tmp_path):
    model, _, _ = example()
    path = save_checkpoint(tmp_path / "ckpt.npz", model, None, None, step=2)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, Holder({}), Holder({}))
