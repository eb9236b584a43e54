"""Functions on Tensors: activations, softmax, losses, linear, dropout, layer norm.

Where a composition of primitives would be much slower or less accurate (softmax,
cross-entropy, linear, GELU) the function is its own primitive with a hand-written
backward; the finite-difference tests check each of them.
"""
import math

import numpy as np

from .random import generator
from .tensor import Tensor, array_module, as_tensor, make

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def relu(x):
    """max(x, 0); gradient 1 where x > 0."""
    return as_tensor(x).relu()


def tanh(x):
    return as_tensor(x).tanh()


def sigmoid(x):
    return as_tensor(x).sigmoid()


def _erf(data):
    module = array_module(data)
    if module is not np:
        from cupyx.scipy.special import erf
        return erf(data)
    try:
        from scipy.special import erf
        return erf(data)
    except ImportError:          # exact, just slower
        return np.vectorize(math.erf, otypes=[data.dtype])(data)


def gelu(x, approximate="none"):
    """GELU: x * Phi(x) ("none", with erf) or its tanh approximation ("tanh"), as PyTorch."""
    x = as_tensor(x)
    d = x.data
    if approximate == "tanh":
        inner = SQRT_2_OVER_PI * (d + 0.044715 * d ** 3)
        t = np.tanh(inner)
        out = 0.5 * d * (1 + t)

        def backward(g):
            return (g * (0.5 * (1 + t) + 0.5 * d * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * d * d)),)
    elif approximate == "none":
        cdf = 0.5 * (1 + _erf(d / math.sqrt(2.0)))
        out = d * cdf

        def backward(g):
            return (g * (cdf + d * np.exp(-0.5 * d * d) / math.sqrt(2 * math.pi)),)
    else:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return make(out.astype(d.dtype, copy=False), (x,), backward)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, computed stably."""
    x = as_tensor(x)
    shifted = np.exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = shifted / shifted.sum(axis=axis, keepdims=True)
    return make(out, (x,), lambda g: (out * (g - (g * out).sum(axis=axis, keepdims=True)),))


def log_softmax(x, axis=-1):
    """x - log(sum(exp(x))) along `axis`, computed stably."""
    x = as_tensor(x)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return make(out, (x,), lambda g: (g - np.exp(out) * g.sum(axis=axis, keepdims=True),))


def cross_entropy(logits, targets, reduction="mean"):
    """Softmax cross-entropy of (N, C) logits against N integer class targets.

    reduction "mean" (default), "sum" or "none". Gradient: (softmax - one_hot) per sample.
    """
    logits = as_tensor(logits)
    t = targets.data if isinstance(targets, Tensor) else targets
    module = array_module(logits.data)
    t = module.asarray(t)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, C), got {logits.shape}")
    n, classes = logits.shape
    if t.shape != (n,):
        raise ValueError(f"cross_entropy targets must have shape ({n},) to match logits {logits.shape}, "
                         f"got {tuple(t.shape)}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy targets must be integer class indices, got dtype {t.dtype}")
    if n and (int(t.min()) < 0 or int(t.max()) >= classes):
        bad = t[(t < 0) | (t >= classes)]
        raise ValueError(f"cross_entropy targets must lie in [0, {classes}), got {bad[:5].tolist()}")
    shifted = logits.data - logits.data.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = module.arange(n)
    losses = -log_probs[rows, t]
    if reduction == "none":
        out, scale = losses, None
    elif reduction in ("mean", "sum"):
        out = losses.sum() if reduction == "sum" else losses.mean()
        scale = 1.0 if reduction == "sum" else 1.0 / max(n, 1)
    else:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    def backward(g):
        grad = np.exp(log_probs)
        grad[rows, t] -= 1
        if scale is None:
            return (grad * g[:, None],)
        return (grad * (g * scale),)
    return make(out, (logits,), backward)


def mse_loss(prediction, target, reduction="mean"):
    """Mean (or sum) of squared differences; shapes must match."""
    prediction, target = as_tensor(prediction), as_tensor(target, prediction)
    if prediction.shape != target.shape:
        raise ValueError(f"mse_loss needs equal shapes, got prediction {prediction.shape} and "
                         f"target {target.shape}")
    squared = (prediction - target) ** 2
    if reduction == "none":
        return squared
    return squared.sum() if reduction == "sum" else squared.mean()


def linear(x, weight, bias=None):
    """x @ weight.T + bias, for x of shape (..., in) and weight (out, in).

    Gradients: dx = g @ W, dW = g.T @ x, db = sum of g over the batch.
    """
    x = as_tensor(x)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but the "
                         f"weight expects {weight.shape[1]} (weight shape {weight.shape})")
    out = x.data @ weight.data.T
    if bias is not None:
        out += bias.data
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        g2 = g.reshape(-1, g.shape[-1])
        x2 = x.data.reshape(-1, x.shape[-1])
        grads = (g @ weight.data if x.requires_grad else None, g2.T @ x2)
        return grads if bias is None else grads + (g2.sum(axis=0),)
    return make(out, parents, backward)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    x = as_tensor(x)
    if not training or p == 0:
        return x
    keep = generator().random(x.shape) >= p
    module = array_module(x.data)
    mask = module.asarray(keep, dtype=x.dtype) / (1 - p)
    return make(x.data * mask, (x,), lambda g: (g * mask,))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing `normalized_shape` axes, then scale and shift."""
    x = as_tensor(x)
    axes = tuple(range(x.ndim - len(tuple(normalized_shape)), x.ndim))
    centered = x - x.mean(axis=axes, keepdims=True)
    variance = (centered * centered).mean(axis=axes, keepdims=True)
    out = centered / (variance + eps) ** 0.5
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out
