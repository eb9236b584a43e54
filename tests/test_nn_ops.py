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


def seeded_dropout(a, p=0.3):
    nn.manual_seed(5)
    return F.dropout(a, p)


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
    "abs": (lambda a: a.abs(), [r(5) + 0.05]),
    "sqrt": (lambda a: a.sqrt(), [positive(4)]),
    "rpow": (lambda a: 2.0 ** a, [r(4)]),
    "transpose negative axes": (lambda a: a.transpose(-1, 0, 1), [r(2, 3, 4)]),
    "index ellipsis and None": (lambda a: a[..., None, 1:], [r(2, 3)]),
    "index pair of integer arrays": (lambda a: a[np.array([0, 1, 1]), np.array([2, 2, 0])], [r(2, 3)]),
    "stack negative axis": (lambda a, b: nn.stack([a, b], axis=-1), [r(2, 3), r(2, 3)]),
    "nll_loss": (lambda a: F.nll_loss(F.log_softmax(a), np.array([1, 0, 2])), [r(3, 4)]),
    "dropout (same mask each call)": (lambda a: seeded_dropout(a), [r(4, 5)]),
}


@pytest.mark.parametrize("name", OPS)
def test_gradient_matches_finite_differences(name):
    fn, arrays = OPS[name]
    check_gradients(fn, *[a.copy() for a in arrays])


def test_python_scalars_keep_the_tensor_dtype():
    t = nn.Tensor(np.ones(3, np.float32), requires_grad=True)
    assert (2 * t + 1.5 - t / 3).dtype == np.float32
    assert (np.float64(2.0) * t).dtype == np.float32 and (t ** 2).dtype == np.float32


@pytest.mark.parametrize("name", OPS)
def test_float32_gradients_stay_float32(name):
    fn, arrays = OPS[name]
    tensors = [nn.Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
    seen = []
    for t in tensors:
        t.register_hook(lambda g: seen.append(g.dtype))     # before any cast in accumulation
    out = fn(*tensors)
    assert out.dtype == np.float32
    out.backward(np.ones(out.shape, np.float32))
    assert seen and all(d == np.float32 for d in seen), seen


def test_ndarrays_and_numpy_scalars_mix_with_tensors():
    t = nn.Tensor(np.arange(3.0), requires_grad=True)
    y = np.ones(3) * t + np.float64(1.0) - np.full(3, 2.0) / (t + 1) + np.eye(3) @ t
    assert isinstance(y, nn.Tensor)
    y.sum().backward()
    np.testing.assert_allclose(t.grad, 1 + 2 / (np.arange(3.0) + 1) ** 2 + 1)


def test_max_splits_the_gradient_among_ties():
    t = nn.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]]), requires_grad=True)
    t.max(axis=1).sum().backward()
    assert np.array_equal(t.grad, [[0, 0.5, 0.5], [1, 0, 0]])


def test_slice_gradients_land_in_place_and_repeated_indices_add():
    t = nn.Tensor(np.zeros(5), requires_grad=True)
    (t[1:3].sum() + t[np.array([4, 4, 0])].sum()).backward()
    assert np.array_equal(t.grad, [1, 1, 1, 0, 2])


def test_split_and_concatenate_are_inverse():
    t = nn.Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    parts = nn.split(t, [1, 3], axis=1)
    assert [p.shape for p in parts] == [(3, 1), (3, 3)]
    back = nn.concatenate(parts, axis=1)
    assert np.array_equal(back.data, t.data)
    (back * nn.Tensor(np.arange(12.0).reshape(3, 4))).sum().backward()
    assert np.array_equal(t.grad, np.arange(12.0).reshape(3, 4))


def test_scalar_gradient_for_a_scalar_output():
    t = nn.Tensor(np.ones(2), requires_grad=True)
    (t * 2).sum().backward(3.0)
    assert np.array_equal(t.grad, [6.0, 6.0])


@pytest.mark.parametrize("call, error, words", [
    (lambda: nn.Tensor(np.ones((2, 3))) @ nn.Tensor(np.ones((4, 5))), ValueError, "(2, 3) @ (4, 5)"),
    (lambda: nn.Tensor(np.ones((2, 3))) + nn.Tensor(np.ones(4)), ValueError, "(2, 3) and (4,)"),
    (lambda: F.cross_entropy(nn.Tensor(np.ones((2, 3))), np.array([0, 3])), ValueError, "[0, 3)"),
    (lambda: F.cross_entropy(nn.Tensor(np.ones((2, 3))), np.array([0.0, 1.0])), TypeError, "integer"),
    (lambda: F.cross_entropy(nn.Tensor(np.ones((2, 3))), np.array([0])), ValueError, "shape (2,)"),
    (lambda: F.mse_loss(nn.Tensor(np.ones(3)), nn.Tensor(np.ones(4))), ValueError, "equal shapes"),
    (lambda: F.linear(nn.Tensor(np.ones((2, 3))), nn.Tensor(np.ones((4, 5)))), ValueError, "3 features"),
    (lambda: nn.split(nn.Tensor(np.ones(5)), 2), ValueError, "equal parts"),
    (lambda: nn.split(nn.Tensor(np.ones(5)), [2, 2]), ValueError, "do not add up to axis 0 length 5"),
    (lambda: nn.concatenate([nn.Tensor(np.ones((2, 3))), nn.Tensor(np.ones((3, 2)))]), ValueError, "[(2, 3), (3, 2)]"),
    (lambda: nn.Tensor(np.ones((2, 3))) @ nn.Tensor(np.ones(2)), ValueError, "(2, 3) @ (2,)"),
    (lambda: F.nll_loss(nn.Tensor(np.ones((2, 3))), np.array([0, -1])), ValueError, "[0, 3)"),
    (lambda: F.cross_entropy(nn.Tensor(np.ones(3)), np.array([0])), ValueError, "(N, C)"),
    (lambda: nn.Tensor(np.ones(3), requires_grad=True).sum().backward(np.ones(2)), ValueError, "shape (2,)"),
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


def test_nan_in_the_logits_gives_a_nan_loss_and_gradient():
    logits = nn.Tensor(np.array([[0.0, np.nan], [1.0, 2.0]]), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 1]))
    assert np.isnan(loss.item())
    loss.backward()
    assert np.isnan(logits.grad[0]).all() and np.isfinite(logits.grad[1]).all()


def test_nan_in_the_loss_is_kept():
    t = nn.Tensor(np.array([1.0, -1.0]), requires_grad=True)
    with np.errstate(invalid="ignore"):
        loss = t.log().sum()
    assert np.isnan(loss.item())
    loss.backward()
    assert np.isfinite(t.grad[0]) and t.grad[1] == -1.0
