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
    sampler = Sampler({"epoch": 3, "consumed": 40, "seed": 0, "world": 2})
    return model, optimizer, sampler


def fresh():
    """What a new run builds before loading: the same layout, other values."""
    model, optimizer, sampler = example()
    model.state = {k: np.zeros_like(v) for k, v in model.state.items()}
    optimizer.state = {"state": {}, "param_groups": [{"lr": 0.5, "momentum": 0.0, "params": [0, 1]}]}
    sampler.state = dict(sampler.state, epoch=0, consumed=0)
    return model, optimizer, sampler


def test_round_trip_restores_everything_bit_for_bit(tmp_path):
    model, optimizer, sampler = example()
    path = save_checkpoint(tmp_path / "ckpt.npz", model, optimizer, sampler, step=17)
    fresh_model, fresh_optimizer, fresh_sampler = fresh()
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
    model, optimizer, _ = fresh()
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, model, optimizer)
    assert not model.state["0.weight"].any()          # nothing was written


class SGD(Holder):
    pass


class Adam(Holder):
    pass


def untouched_after(load, *holders):
    """Run load() expecting a CheckpointError; return whether every holder kept its state."""
    before = [repr(h.state) for h in holders]
    with pytest.raises(CheckpointError) as error:
        load()
    return [repr(h.state) for h in holders] == before, str(error.value)


def test_everything_is_checked_before_anything_is_written(tmp_path):
    model, optimizer, sampler = example()
    path = save_checkpoint(tmp_path / "ckpt.npz", model, optimizer, sampler, step=3)
    # another world size: only the sampler differs, and it is checked last
    m, o, s = fresh()
    s.state["world"] = 8
    same, message = untouched_after(lambda: load_checkpoint(path, m, o, s), m, o, s)
    assert same and "world=2 vs 8" in message
    # another parameter-group layout: the model fits, the optimizer does not
    m, o, s = fresh()
    o.state["param_groups"] = [{"lr": 0.5, "momentum": 0.0, "params": [0]},
                               {"lr": 0.5, "momentum": 0.0, "params": [1]}]
    same, message = untouched_after(lambda: load_checkpoint(path, m, o, s), m, o, s)
    assert same and "groups of [2] parameters, the optimizer has [1, 1]" in message
    # another model shape
    m, o, s = fresh()
    m.state["0.bias"] = np.zeros(3, np.float32)
    same, message = untouched_after(lambda: load_checkpoint(path, m, o, s), m, o, s)
    assert same and "0.bias: checkpoint (2,) vs model (3,)" in message


def test_another_kind_of_optimizer_is_a_clear_error(tmp_path):
    model, _, sampler = example()
    sgd = SGD({"state": {0: {"momentum_buffer": np.ones(3)}},
               "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]})
    path = save_checkpoint(tmp_path / "ckpt.npz", model, sgd, sampler)
    adam = Adam({"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1]}]})
    m, _, s = fresh()
    same, message = untouched_after(lambda: load_checkpoint(path, m, adam, s), m, adam, s)
    assert same and "holds SGD state, but the optimizer is a Adam" in message
    adam.__class__ = SGD       # same class name, other hyper-parameters: still refused
    same, message = untouched_after(lambda: load_checkpoint(path, m, adam, s), m, adam, s)
    assert same and "hyper-parameters ['lr', 'momentum', 'params']" in message


def test_a_save_removes_the_temporaries_of_killed_saves(tmp_path):
    model, optimizer, sampler = example()
    (tmp_path / ".ckpt.npz.4242.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".other.npz.4242.tmp").write_bytes(b"another file's")
    save_checkpoint(tmp_path / "ckpt.npz", model, optimizer, sampler)
    assert sorted(os.listdir(tmp_path)) == [".other.npz.4242.tmp", "ckpt.npz"]


def test_an_sgd_checkpoint_does_not_load_into_adam(tmp_path):
    import nn
    from nn.optim import SGD as RealSGD
    from nn.optim import Adam as RealAdam
    model = nn.Linear(3, 2)
    sgd = RealSGD(model.parameters(), lr=0.1, momentum=0.9)
    path = save_checkpoint(tmp_path / "ckpt.npz", model, sgd)
    other = nn.Linear(3, 2)
    weight = other.weight.data.copy()
    adam = RealAdam(other.parameters(), lr=1e-3)
    with pytest.raises(CheckpointError, match="holds SGD state, but the optimizer is a Adam"):
        load_checkpoint(path, other, adam)
    assert np.array_equal(other.weight.data, weight) and adam.param_groups[0]["lr"] == 1e-3
