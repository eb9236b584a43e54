"""Finite-difference gradient checks in float64."""
import numpy as np

import nn


def numerical_gradient(fn, arrays, index, eps=1e-6):
    """d fn / d arrays[index] by central differences (fn returns a float)."""
    base = arrays[index]
    grad = np.zeros_like(base)
    it = np.nditer(base, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        original = base[i]
        base[i] = original + eps
        plus = fn(*arrays)
        base[i] = original - eps
        minus = fn(*arrays)
        base[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def check_gradients(fn, *arrays, rtol=1e-5, atol=1e-7):
    """Compare autograd's gradients of sum-of-weighted-outputs of fn with finite differences.

    fn maps Tensors to a Tensor; the check uses a fixed random projection of the output so
    every output element matters.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    rng = np.random.default_rng(123)
    projection = {}

    def scalar(*raw):
        out = fn(*[nn.Tensor(a) for a in raw]).data
        weights = projection.setdefault("w", rng.standard_normal(np.shape(out)))
        return float(np.sum(out * weights))

    tensors = [nn.Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    weights = projection.setdefault("w", rng.standard_normal(out.shape))
    (out * nn.Tensor(weights)).sum().backward()
    for index, tensor in enumerate(tensors):
        expected = numerical_gradient(scalar, [a.copy() for a in arrays], index)
        got = np.zeros_like(arrays[index]) if tensor.grad is None else tensor.grad
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {index}")
