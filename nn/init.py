"""Parameter initialisation with PyTorch's formulas, drawn from the nn generator.

Every draw is made in float64 on the host by a NumPy Generator and then cast (and moved to
the GPU for CuPy data), so a seed fixes the weights whatever the dtype or device.

Tensor-parallel layers need "a sharded layer initialised from a seed is exactly the slice
of the unsharded layer": build the full arrays with `linear_parameters(..., seed=s)` and
keep the slice, e.g. `weight[rank * rows:(rank + 1) * rows]`.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

from .random import generator
from .tensor import Tensor, array_module


def _to_module(values, like):
    """values (a NumPy array) on like's array module, in like's dtype."""
    return array_module(like).asarray(values.astype(like.dtype, copy=False))


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, rng: np.random.Generator | None = None) -> Tensor:
    """Fill `tensor` in place with U(a, b) samples (from `rng`, else the nn generator)."""
    values = (rng or generator()).uniform(a, b, size=tensor.shape)
    tensor.data[...] = _to_module(values, tensor.data)
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    """Fill `tensor` with zeros, in place."""
    tensor.data[...] = 0
    return tensor


def ones_(tensor: Tensor) -> Tensor:
    """Fill `tensor` with ones, in place."""
    tensor.data[...] = 1
    return tensor


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, rng: np.random.Generator | None = None) -> Tensor:
    """He initialisation for a leaky-ReLU slope `a`, fan-in mode, as PyTorch:
    U(-bound, bound) with bound = sqrt(2 / (1 + a^2)) * sqrt(3 / fan_in), fan_in the
    product of all axes but the first. Linear's default is a = sqrt(5): bound 1/sqrt(fan_in)."""
    fan_in = int(np.prod(tensor.shape[1:]))
    bound = math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / fan_in) if fan_in else 0.0
    return uniform_(tensor, -bound, bound, rng)


def linear_parameters(in_features: int, out_features: int, bias: bool = True, dtype: DTypeLike = np.float32,
                      seed: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight, bias) ndarrays of a Linear layer as PyTorch initialises them: weight of shape
    (out_features, in_features) then bias (or None), both U(-1/sqrt(in), 1/sqrt(in)).

    seed=None draws from the nn generator (what nn.Linear does); an int uses a fresh
    generator, the same one nn.manual_seed(seed) makes, so
    `nn.manual_seed(s); nn.Linear(i, o)` and `linear_parameters(i, o, seed=s)` agree.
    """
    rng = generator() if seed is None else np.random.default_rng(seed)
    bound = 1 / math.sqrt(in_features) if in_features else 0.0
    weight = rng.uniform(-bound, bound, size=(out_features, in_features)).astype(dtype)
    return weight, (rng.uniform(-bound, bound, size=(out_features,)).astype(dtype) if bias else None)
