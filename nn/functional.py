"""Functions on Tensors: activations, softmax, losses, linear, dropout, layer norm.

Where a composition of primitives would be much slower or less accurate (softmax,
cross-entropy, linear, GELU) the function is its own primitive with a hand-written
backward; the finite-difference tests check each of them.
"""
from __future__ import annotations

import math
from typing import Any, Union

import numpy as np

from .random import generator
from .tensor import Tensor, array_module, as_tensor, make

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TensorLike = Union[Tensor, Any]     # a Tensor, or an array or number taken as a constant


def relu(x: TensorLike) -> Tensor:
    """max(x, 0); gradient 1 where x > 0."""
    return as_tensor(x).relu()


def tanh(x: TensorLike) -> Tensor:
    """Hyperbolic tangent; gradient 1 - tanh(x) ** 2."""
    return as_tensor(x).tanh()


def sigmoid(x: TensorLike) -> Tensor:
    """1 / (1 + exp(-x)); gradient sigmoid(x) * (1 - sigmoid(x))."""
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


def gelu(x: TensorLike, approximate: str = "none") -> Tensor:
    """GELU: x * Phi(x) ("none", with erf) or its tanh approximation ("tanh"), as PyTorch.

    Gradient: Phi(x) + x * phi(x) for "none"; the derivative of the tanh formula for "tanh".
    """
    x = as_tensor(x)
    d = x.data
    xp = array_module(d)
    if approximate == "tanh":
        inner = SQRT_2_OVER_PI * (d + 0.044715 * d ** 3)
        t = xp.tanh(inner)
        out = 0.5 * d * (1 + t)

        def backward(g):
            return (g * (0.5 * (1 + t) + 0.5 * d * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * d * d)),)
    elif approximate == "none":
        cdf = 0.5 * (1 + _erf(d / math.sqrt(2.0)))
        out = d * cdf

        def backward(g):
            return (g * (cdf + d * xp.exp(-0.5 * d * d) / math.sqrt(2 * math.pi)),)
    else:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return make(out.astype(d.dtype, copy=False), (x,), backward)


def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along `axis`, computed stably.

    Gradient: out * (g - sum(g * out)) along `axis`."""
    x = as_tensor(x)
    shifted = array_module(x.data).exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = shifted / shifted.sum(axis=axis, keepdims=True)
    return make(out, (x,), lambda g: (out * (g - (g * out).sum(axis=axis, keepdims=True)),))


def _log_softmax_array(data, axis):
    """The array x - log(sum(exp(x))) along `axis`, shifted by the maximum first so that
    exp never overflows (the one place log-softmax is computed)."""
    xp = array_module(data)
    shifted = data - data.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """x - log(sum(exp(x))) along `axis`, computed stably.

    Gradient: g - softmax(x) * sum(g) along `axis`."""
    x = as_tensor(x)
    xp = array_module(x.data)
    out = _log_softmax_array(x.data, axis)
    return make(out, (x,), lambda g: (g - xp.exp(out) * g.sum(axis=axis, keepdims=True),))


def cross_entropy(logits: TensorLike, targets: Any, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of (N, C) logits against N integer class targets.

    reduction "mean" (default), "sum" or "none". Gradient: (softmax - one_hot) per sample.
    A NaN in the logits gives a NaN loss (nothing is clipped).
    """
    logits = as_tensor(logits)
    t = _class_targets("cross_entropy", logits, targets)
    n = logits.shape[0]
    xp = array_module(logits.data)
    log_probs = _log_softmax_array(logits.data, axis=1)
    rows = xp.arange(n)
    losses = -log_probs[rows, t]
    if reduction == "none":
        out, scale = losses, None
    elif reduction in ("mean", "sum"):
        out = losses.sum() if reduction == "sum" else losses.mean()
        scale = 1.0 if reduction == "sum" else 1.0 / max(n, 1)
    else:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    def backward(g):
        grad = xp.exp(log_probs)
        grad[rows, t] -= 1
        if scale is None:
            return (grad * g[:, None],)
        return (grad * (g * scale),)
    return make(out, (logits,), backward)


def _class_targets(name, logits, targets):
    """targets as an integer array of shape (N,) with values in [0, C) for (N, C) logits,
    or a clear error saying which of these fails."""
    t = targets.data if isinstance(targets, Tensor) else targets
    t = array_module(logits.data).asarray(t)
    if logits.ndim != 2:
        raise ValueError(f"{name} expects logits of shape (N, C), got {logits.shape}")
    n, classes = logits.shape
    if t.shape != (n,):
        raise ValueError(f"{name} targets must have shape ({n},) to match logits {logits.shape}, "
                         f"got {tuple(t.shape)}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name} targets must be integer class indices, got dtype {t.dtype}")
    if n and (int(t.min()) < 0 or int(t.max()) >= classes):
        bad = t[(t < 0) | (t >= classes)]
        raise ValueError(f"{name} targets must lie in [0, {classes}), got {bad[:5].tolist()}")
    return t


def nll_loss(log_probs: TensorLike, targets: Any, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of (N, C) log-probabilities (e.g. log_softmax output) at N
    integer targets; reduction "mean", "sum" or "none". Gradient: -1 at each target."""
    log_probs = as_tensor(log_probs)
    t = _class_targets("nll_loss", log_probs, targets)
    picked = -log_probs[array_module(log_probs.data).arange(len(t)), t]
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return picked if reduction == "none" else picked.sum() if reduction == "sum" else picked.mean()


def mse_loss(prediction: TensorLike, target: TensorLike, reduction: str = "mean") -> Tensor:
    """Mean (or sum, or "none": each) of squared differences; shapes must match.
    Gradient: 2 * (prediction - target) / N for the mean."""
    prediction, target = as_tensor(prediction), as_tensor(target, prediction)
    if prediction.shape != target.shape:
        raise ValueError(f"mse_loss needs equal shapes, got prediction {prediction.shape} and "
                         f"target {target.shape}")
    squared = (prediction - target) ** 2
    if reduction == "none":
        return squared
    return squared.sum() if reduction == "sum" else squared.mean()


def linear(x: TensorLike, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, for x of shape (..., in) and weight (out, in).

    Gradients: dx = g @ W, dW = g.T @ x, db = sum of g over the batch.
    """
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but the "
                         f"weight expects {weight.shape[1]} (weight shape {weight.shape})")
    out = x.data @ weight.data.T
    if bias is not None:
        out += bias.data
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        g2 = g.reshape(-1, g.shape[-1])
        x2 = x.data.reshape(-1, x.shape[-1])
        grads = (g @ weight.data if x.requires_grad else None, g2.T @ x2 if weight.requires_grad else None)
        return grads if bias is None else grads + (g2.sum(axis=0),)
    return make(out, parents, backward)


def dropout(x: TensorLike, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only).

    The mask comes from the nn generator (nn.manual_seed); gradient: g * mask."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    x = as_tensor(x)
    if not training or p == 0:
        return x
    keep = generator().random(x.shape) >= p
    module = array_module(x.data)
    mask = module.asarray(keep, dtype=x.dtype) / (1 - p)
    return make(x.data * mask, (x,), lambda g: (g * mask,))


def layer_norm(x: TensorLike, normalized_shape: int | tuple[int, ...], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing `normalized_shape` axes (biased variance, as PyTorch),
    then scale by weight and shift by bias. Built from primitives, which give the gradient."""
    x = as_tensor(x)
    count = 1 if isinstance(normalized_shape, int) else len(tuple(normalized_shape))
    axes = tuple(range(x.ndim - count, x.ndim))
    centered = x - x.mean(axis=axes, keepdims=True)
    variance = (centered * centered).mean(axis=axes, keepdims=True)
    out = centered / (variance + eps) ** 0.5
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def embedding(indices: Any, weight: TensorLike) -> Tensor:
    """Rows of `weight` (num_embeddings, dim) picked by integer `indices` of any shape:
    output shape indices.shape + (dim,). Gradient: g scattered back into the rows used,
    repeated indices adding up (rows never used get zero)."""
    weight = as_tensor(weight)
    idx = indices.data if isinstance(indices, Tensor) else indices
    idx = array_module(weight.data).asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding indices must be integers, got dtype {idx.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding weight must be 2-D (num_embeddings, dim), got shape {weight.shape}")
    rows = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= rows):
        bad = idx[(idx < 0) | (idx >= rows)]
        raise IndexError(f"embedding indices must lie in [0, {rows}), got {bad[:5].tolist()}")
    return weight[idx]


def causal_mask(query_length: int, key_length: int, xp: Any = np) -> Any:
    """Boolean (query_length, key_length) mask, True where query i may attend to key j
    (j <= i + key_length - query_length: the lower triangle, aligned to the last key)."""
    offset = key_length - query_length
    return xp.arange(key_length)[None, :] <= xp.arange(query_length)[:, None] + offset


def scaled_dot_product_attention(query: TensorLike, key: TensorLike, value: TensorLike, attn_mask: Any = None,
                                 dropout_p: float = 0.0, causal: bool = False, scale: float | None = None, *,
                                 is_causal: bool | None = None) -> Tensor:
    """softmax(query @ key^T * scale + mask) @ value over the last two axes, as PyTorch's.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); leading axes
    (batch, heads) broadcast. scale defaults to 1/sqrt(E). causal=True (or PyTorch's
    is_causal) lets position i see keys j <= i only. attn_mask: boolean (True = may
    attend) or float (added to the scores), broadcast to (..., L, S). dropout_p drops
    attention weights (nn generator). Built from primitives (matmul, masked_fill, the
    stable softmax), which give the gradient; memory O(L * S) per head.
    """
    causal = bool(causal if is_causal is None else is_causal)
    query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"attention shapes do not fit: query {query.shape}, key {key.shape}, "
                         f"value {value.shape} (need query/key feature axes equal and as many "
                         f"values as keys)")
    if causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or causal=True, not both")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(_swap_last(key.ndim))) * scale
    xp = array_module(scores.data)
    if causal:
        allowed = causal_mask(query.shape[-2], key.shape[-2], xp)
        scores = scores.masked_fill(~allowed, -math.inf)
    elif attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else xp.asarray(attn_mask)
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == bool else scores + as_tensor(mask, scores)
    weights = dropout(softmax(scores, axis=-1), dropout_p) if dropout_p else softmax(scores, axis=-1)
    return weights @ value


def _swap_last(ndim):
    """The axis order that swaps the last two of `ndim` axes."""
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)
