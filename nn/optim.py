"""Optimizers with PyTorch's update formulas (and state_dict layout).

Each works on the parameters' arrays in place, so it runs unchanged on CuPy data and
after data-parallel gradient averaging.
"""
import numpy as np

from .autograd import no_grad


class Optimizer:
    """Holds the parameters (one group), their per-parameter state and hyper-parameters."""

    def __init__(self, params, defaults):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.defaults = dict(defaults)
        self.state = {}                    # parameter index -> dict of arrays / numbers

    @property
    def param_groups(self):
        return [dict(self.defaults, params=self.params)]

    def zero_grad(self, set_to_none=True):
        """Reset every parameter's gradient (to None, or to zeros in place)."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def step(self):
        """Update every parameter that has a gradient."""
        with no_grad():
            for index, p in enumerate(self.params):
                if p.grad is not None:
                    self._update(p.data, p.grad, self.state.setdefault(index, {}))

    def _update(self, param, grad, state):
        raise NotImplementedError

    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{hyper-parameters, "params": indices}]}"""
        return {"state": {i: dict(s) for i, s in self.state.items()},
                "param_groups": [dict(self.defaults, params=list(range(len(self.params))))]}

    def load_state_dict(self, state_dict):
        """Restore state and hyper-parameters saved by state_dict(); checks that they fit."""
        group = state_dict["param_groups"][0]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"optimizer state is for {len(group['params'])} parameters, this "
                             f"optimizer has {len(self.params)}")
        state = {}
        for index, entries in state_dict["state"].items():
            index = int(index)
            shape = self.params[index].shape
            for key, value in entries.items():
                if hasattr(value, "shape") and value.shape not in ((), shape):
                    raise ValueError(f"optimizer state {index}.{key} has shape {value.shape}, "
                                     f"parameter has {shape}")
            state[index] = {k: self._like(v, self.params[index].data) for k, v in entries.items()}
        self.state = state
        self.defaults.update({k: v for k, v in group.items() if k != "params"})

    @staticmethod
    def _like(value, data):
        if hasattr(value, "shape") and value.shape == data.shape:
            module = type(data)
            if module is np.ndarray:
                return np.array(value.get() if hasattr(value, "get") else value, dtype=data.dtype)
            import cupy
            return cupy.asarray(value, dtype=data.dtype)
        return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, weight decay and Nesterov:
    g = grad + wd*p; buf = g (first step) or momentum*buf + (1-dampening)*g;
    g = g + momentum*buf (Nesterov) or buf; p -= lr*g."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0 (got {lr}, {momentum}, {weight_decay})")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, param, grad, state):
        h = self.defaults
        if h["weight_decay"]:
            grad = grad + h["weight_decay"] * param
        if h["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= h["momentum"]
                buf += (1 - h["dampening"]) * grad
            grad = grad + h["momentum"] * buf if h["nesterov"] else buf
        param -= h["lr"] * grad


class Adam(Optimizer):
    """Adam (Kingma and Ba) as PyTorch computes it:
    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), with g = grad + wd*p."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid Adam hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, param, grad, state):
        h = self.defaults
        beta1, beta2 = h["betas"]
        if h["weight_decay"]:
            if self.decoupled:
                param *= 1 - h["lr"] * h["weight_decay"]
            else:
                grad = grad + h["weight_decay"] * param
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param)
            state["exp_avg_sq"] = np.zeros_like(param)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        denom = np.sqrt(v) / np.sqrt(1 - beta2 ** t) + h["eps"]
        param -= (h["lr"] / (1 - beta1 ** t)) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): p *= 1 - lr*wd first."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
