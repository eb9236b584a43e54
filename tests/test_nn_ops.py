"""Every Tensor op's gradient against finite differences (float64), and its errors."""
import numpy as np
import pytest

import nn
from nn import functional as F
from tests.gradcheck import check_gradients

rng = np.random.default_rng(0)


def r(*shape):
    return rng.standard_normal(shape)


def positive(*shape):
    return rng.uniform(0.5, 2.0, shape)


OPS = {
    "add broadcast": (lambda a, b: a + b, [r(3, 4), r(4)]),
    "add scalar": (lambda a: 2.5 + a, [r(3)]),
    "sub": (lambda a, b: a - b, [r(2, 3), r(2, 1)]),
    "rsub": (lambda a: 1.0 - a, [r(3)]),
    "mul broadcast": (lambda a, b: a * b, [r(2, 3, 4), r(3, 1)]),
    "div": (lambda a, b: a / b, [r(3, 2), positive(3, 2)]),
    "rdiv": (lambda a: 2.0 / a, [positive(4)]),
    "neg": (lambda a: -a, [r(3)]),
    "pow": (lambda a: a ** 3, [r(5)]),
    "pow fractional": (lambda a: a ** 0.5, [positive(5)]),
    "pow tensor": (lambda a, b: a ** b, [positive(4), r(4)]),
    "matmul 2d": (lambda a, b: a @ b, [r(3, 4), r(4, 5)]),
    "matmul batched": (lambda a, b: a @ b, [r(2, 3, 4), r(4, 2)]),
    "matmul batch broadcast": (lambda a, b: a @ b, [r(1, 3, 4), r(5, 4, 2)]),
    "matmul vector": (lambda a, b: a @ b, [r(3, 4), r(4)]),
    "vector matmul": (lambda a, b: a @ b, [r(4), r(4, 2)]),
    "dot": (lambda a, b: a @ b, [r(4), r(4)]),
    "sum all": (lambda a: a.sum(), [r(3, 4)]),
    "sum axis": (lambda a: a.sum(axis=1), [r(3, 4, 2)]),
    "sum keepdims": (lambda a: a.sum(axis=(0, 2), keepdims=True), [r(3, 4, 2)]),
    "mean": (lambda a: a.mean(axis=0), [r(3, 4)]),
    "max axis": (lambda a: a.max(axis=1), [r(3, 5)]),
    "max all": (lambda a: a.max(), [r(3, 5)]),
    "max keepdims": (lambda a: a.max(axis=0, keepdims=True), [r(3, 5)]),
    "reshape": (lambda a: a.reshape(6, 2) * 2, [r(3, 4)]),
    "transpose": (lambda a: a.transpose(2, 0, 1), [r(2, 3, 4)]),
    "T": (lambda a: a.T, [r(2, 3)]),
    "slice": (lambda a: a[1:, ::2], [r(4, 5)]),
    "integer index": (lambda a: a[np.array([0, 2, 2, 1])], [r(3, 2)]),
    "exp": (lambda a: a.exp(), [r(4)]),
    "log": (lambda a: a.log(), [positive(4)]),
    "tanh": (lambda a: a.tanh(), [r(4)]),
    "sigmoid": (lambda a: a.sigmoid(), [r(4)]),
    "relu": (lambda a: a.relu(), [r(6) + 0.05]),
    "gelu erf": (lambda a: F.gelu(a), [r(6)]),
    "gelu tanh": (lambda a: F.gelu(a, "tanh"), [r(6)]),
    "softmax": (lambda a: F.softmax(a), [r(3, 5)]),
    "softmax axis 0": (lambda a: F.softmax(a, axis=0), [r(3, 5)]),
    "log_softmax": (lambda a: F.log_softmax(a), [r(3, 5)]),
    "concatenate": (lambda a, b: nn.concatenate([a, b], axis=1), [r(2, 3), r(2, 2)]),
    "split": (lambda a: nn.split(a, [1, 3], axis=1)[1] * 3 + nn.split(a, 2, axis=0)[0][:, :3], [r(2, 4)]),
    "stack": (lambda a, b: nn.stack([a, b], axis=1), [r(3), r(3)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [r(4, 3), r(5, 3), r(5)]),
    "linear batched": (lambda x, w: F.linear(x, w), [r(2, 4, 3), r(5, 3)]),
    "cross_entropy": (lambda a: F.cross_entropy(a, np.array([0, 2, 1])), [r(3, 4)]),
    "cross_entropy sum": (lambda a: F.cross_entropy(a, np.array([3, 3]), reduction="sum"), [r(2, 4)]),
    "cross_entropy none": (lambda a: F.cross_entropy(a, np.array([1, 0]), reduction="none"), [r(2, 4)]),
    "mse": (lambda a, b: F.mse_loss(a, b), [r(3, 2), r(3, 2)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4,), w, b), [r(3, 4), r(4), r(4)]),
    "value used twice": (lambda a: a * a + a, [r(3)]),
}


@pytest.mark.parametrize("name", OPS)
def test_gradient_matches_finite_differences(name):
    fn, arrays = OPS[name]
    check_gradients(fn, *[a.copy() for a in arrays])


def test_python_scalars_keep_the_tensor_dtype():
    t = nn.Tensor(np.ones(3, np.float32), requires_grad=True)
    assert (2 * t + 1.5 - t / 3).dtype == np.float32


@pytest.mark.parametrize("call, error, words", [
    (lambda: nn.Tensor(np.ones((2, 3))) @ nn.Tensor(np.ones((4, 5))), ValueError, "(2, 3) @ (4, 5)"),
    (lambda: nn.Tensor(np.ones((2, 3))) + nn.Tensor(np.ones(4)), ValueError, "(2, 3) and (4,)"),
    (lambda: F.cross_entropy(nn.Tensor(np.ones((2, 3))), np.array([0, 3])), ValueError, "[0, 3)"),
    (lambda: F.cross_entropy(nn.Tensor(np.ones((2, 3))), np.array([0.0, 1.0])), TypeError, "integer"),
    (lambda: F.cross_entropy(nn.Tensor(np.ones((2, 3))), np.array([0])), ValueError, "shape (2,)"),
    (lambda: F.mse_loss(nn.Tensor(np.ones(3)), nn.Tensor(np.ones(4))), ValueError, "equal shapes"),
    (lambda: F.linear(nn.Tensor(np.ones((2, 3))), nn.Tensor(np.ones((4, 5)))), ValueError, "3 features"),
    (lambda: nn.split(nn.Tensor(np.ones(5)), 2), ValueError, "equal parts"),
])
def test_bad_shapes_raise_clear_errors(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_backward_on_non_scalar_needs_a_gradient():
    t = nn.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(3,\)"):
        (t * 2).backward()
    (t * 2).backward(np.ones(3))
    assert np.array_equal(t.grad, [2.0, 2.0, 2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        nn.Tensor(np.ones(1)).backward()


def test_nan_in_the_loss_is_kept():
    t = nn.Tensor(np.array([1.0, -1.0]), requires_grad=True)
    loss = t.log().sum()
    assert np.isnan(loss.item())
    loss.backward()
    assert np.isfinite(t.grad[0]) and t.grad[1] == -1.0
