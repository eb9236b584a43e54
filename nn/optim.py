"""Optimizers with PyTorch's update formulas, parameter groups and state_dict layout.

Each updates the parameters' arrays in place (array functions taken from the data), so it
runs unchanged on CuPy data and after data-parallel gradient averaging. Hyper-parameters
live in `optimizer.param_groups` (a list of dicts, as in PyTorch): changing
`param_groups[0]["lr"]` changes the next step.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from kernels.arrays import to_numpy

from .autograd import no_grad
from .tensor import Tensor, array_module


class Optimizer:
    """Holds parameter groups, per-parameter state and hyper-parameters.

    params: an iterable of Tensors, or of dicts {"params": [...], "lr": ..., ...} whose
    missing hyper-parameters come from the optimizer's defaults.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], defaults: dict):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            group = dict(self.defaults, **group)
            group["params"] = list(group["params"])
            self.param_groups.append(group)
        self.state = {}                    # parameter index (over all groups) -> dict

    @property
    def params(self) -> list[Tensor]:
        """Every parameter, in group order (the indices of state and state_dict)."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient (to None, or to zeros in place)."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        index = 0
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p.data, p.grad, self.state.setdefault(index, {}), group)
                    index += 1

    def _update(self, param, grad, state, group):
        """Update one parameter array in place from its gradient, state and group."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """{"state": {index: {...}}, "param_groups": [{hyper-parameters, "params": indices}]}"""
        groups, start = [], 0
        for group in self.param_groups:
            count = len(group["params"])
            groups.append(dict(group, params=list(range(start, start + count))))
            start += count
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore state and hyper-parameters saved by state_dict(); checks that they fit."""
        saved = state_dict["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"optimizer state has groups of {[len(g['params']) for g in saved]} "
                             f"parameters, this optimizer has {[len(g['params']) for g in self.param_groups]}")
        params = self.params
        state = {}
        for index, entries in state_dict["state"].items():
            index = int(index)
            shape = params[index].shape
            for key, value in entries.items():
                if hasattr(value, "shape") and tuple(value.shape) not in ((), shape):
                    raise ValueError(f"optimizer state {index}.{key} has shape {tuple(value.shape)}, "
                                     f"parameter has {shape}")
            state[index] = {k: self._like(v, params[index].data) for k, v in entries.items()}
        self.state = state
        for group, old in zip(self.param_groups, saved):
            group.update({k: v for k, v in old.items() if k != "params"})

    @staticmethod
    def _like(value, data):
        """A saved state entry as an array like the parameter's data (or a plain number)."""
        if hasattr(value, "shape") and tuple(value.shape) == data.shape:
            xp = array_module(data)
            value = to_numpy(value) if xp is np else value
            return xp.array(value, dtype=data.dtype)
        return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, weight decay and Nesterov:
    g = grad + wd*p; buf = g (first step) or momentum*buf + (1-dampening)*g;
    g = g + momentum*buf (Nesterov) or buf; p -= lr*g."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0 (got {lr}, {momentum}, {weight_decay})")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, param, grad, state, group):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param
        if group["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= group["momentum"]
                buf += (1 - group["dampening"]) * grad
            grad = grad + group["momentum"] * buf if group["nesterov"] else buf
        param -= group["lr"] * grad


class Adam(Optimizer):
    """Adam (Kingma and Ba) as PyTorch computes it:
    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), with g = grad + wd*p."""

    decoupled = False

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid {type(self).__name__} hyper-parameters lr={lr}, betas={betas}, "
                             f"eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, param, grad, state, group):
        lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if decay:
            if self.decoupled:
                param *= 1 - lr * decay
            else:
                grad = grad + decay * param
        xp = array_module(param)
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param)
            state["exp_avg_sq"] = xp.zeros_like(param)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * (grad * grad)
        # Python floats (not NumPy float64 scalars) keep float32 arithmetic in float32
        denom = xp.sqrt(v)
        denom /= math.sqrt(1 - beta2 ** t)
        denom += eps
        param -= (lr / (1 - beta1 ** t)) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): p *= 1 - lr*wd first."""

    decoupled = True

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
