"""The examples' building blocks run and learn (short runs; the full runs are in the README)."""
import os
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn (pip install '.[test]')")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import train_digits  # noqa: E402


def test_digits_training_learns_in_a_few_epochs():
    messages = []
    model, history = train_digits.train(epochs=3, log=messages.append)
    assert len(messages) == 3 and "test accuracy" in messages[0]
    assert history[-1]["test_accuracy"] > 0.85 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_digits_data_and_plot(tmp_path):
    x_train, y_train, x_test, y_test = train_digits.load_data()
    assert x_train.dtype == np.float32 and x_train.shape[1] == 64 and len(x_train) + len(x_test) == 1797
    assert x_train.max() <= 1.0 and set(np.unique(y_train)) == set(range(10))
    path = train_digits.save_plot([{"epoch": 1, "train_loss": 1.0, "test_loss": 1.1, "test_accuracy": 0.5},
                                   {"epoch": 2, "train_loss": 0.5, "test_loss": 0.6, "test_accuracy": 0.8}],
                                  str(tmp_path / "plot.png"))
    if path is not None:
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_mlp_benchmark_steps_agree_with_numpy():
    from bench import mlp
    x, y = mlp.make_batch(16)
    model = mlp.library_model()
    optimizer = __import__("nn").optim.SGD(model.parameters(), lr=0.01)
    weights = [(layer.weight.data.copy(), layer.bias.data.copy()) for layer in model if hasattr(layer, "weight")]
    for _ in range(2):
        assert abs(mlp.library_step(model, optimizer, x, y) - mlp.numpy_step(weights, x, y, 0.01)) < 1e-5
    layers = [layer for layer in model if hasattr(layer, "weight")]
    assert all(np.allclose(layer.weight.data, w, atol=1e-6) for layer, (w, _) in zip(layers, weights))
