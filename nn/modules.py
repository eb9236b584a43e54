"""Modules: containers of parameters and sub-modules, with PyTorch's names and keys."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from kernels.arrays import to_numpy

from . import functional as F
from .init import linear_parameters
from .tensor import Tensor, array_module


class Parameter(Tensor):
    """A Tensor that a Module registers as one of its weights (requires_grad by default)."""

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter({self.data!r})"


class Module:
    """Base class: assigning a Parameter or Module attribute registers it, in order.

    Names follow PyTorch ("0.weight", "encoder.layers.1.bias"), so state_dict keys match.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               f"before assigning {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """module(x) runs forward(x)."""
        return self.forward(*args, **kwargs)

    # -- traversal -------------------------------------------------------------------------
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(name, parameter) pairs: this module's own first, then each child's, in order."""
        seen = set()
        for name, module in self.named_modules(prefix):
            for key, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{name}.{key}" if name else key), param

    def parameters(self) -> list[Parameter]:
        """The parameters, in registration order (each once)."""
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(name, module) for this module and all below it, depth first."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_children(self) -> list[tuple[str, Module]]:
        """(name, module) for the direct sub-modules, in order."""
        return list(self._modules.items())

    def children(self) -> list[Module]:
        """The direct sub-modules, in order."""
        return list(self._modules.values())

    def modules(self) -> list[Module]:
        """This module and all below it, depth first."""
        return [m for _, m in self.named_modules()]

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict:
        """name -> parameter data (the arrays themselves, not copies), PyTorch's keys."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> dict:
        """Copy arrays from `state_dict` into the parameters, in place.

        Every key and shape is checked before anything is written: missing or unexpected
        keys (with strict=True) and shape mismatches raise a KeyError/ValueError naming them.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        wrong = [f"{k}: checkpoint {_shape(state_dict[k])} vs model {own[k].shape}"
                 for k in own if k in state_dict and _shape(state_dict[k]) != own[k].shape]
        if wrong:
            raise ValueError("load_state_dict: shape mismatch for " + "; ".join(wrong))
        for key, param in own.items():
            if key in state_dict:
                param.data[...] = _on_module(state_dict[key], param.data)
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active) for this module and all below it."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: train(False)."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient (to None, or to zeros in place)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def extra_repr(self):
        """Settings shown inside the module's repr."""
        return ""

    def __repr__(self):
        lines = [f"({name}): {module!r}".replace("\n", "\n  ") for name, module in self._modules.items()]
        inner = "\n  " + "\n  ".join(lines) + "\n" if lines else ""
        return f"{type(self).__name__}({self.extra_repr()}{inner})"


def _shape(value):
    """The shape of an ndarray, CuPy array, PyTorch tensor or nested list, as a tuple."""
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def _on_module(value, like):
    """value (NumPy, CuPy, a CPU PyTorch tensor, a list) as an array of like's module."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):       # a PyTorch tensor
        value = value.detach().cpu().numpy()
    if array_module(like) is np:
        return to_numpy(value)
    return array_module(like).asarray(value)


class Linear(Module):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features).

    Initialised as PyTorch does (kaiming_uniform with a=sqrt(5)): weight and bias uniform
    in +-1/sqrt(in_features), drawn from the nn generator (nn.manual_seed), weight first.
    `nn.init.linear_parameters` builds the same arrays from a seed without a module.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: DTypeLike = np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        weight, bias = linear_parameters(in_features, out_features, bias, dtype)
        self.weight = Parameter(weight)
        self.bias = Parameter(bias) if bias is not None else None

    def forward(self, x):
        """x @ weight.T + bias."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Sequential(Module):
    """Modules applied in order; named "0", "1", ... (or by an OrderedDict's keys) and
    indexable like a list. A slice keeps the original names, as in PyTorch."""

    def __init__(self, *modules: Module):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                setattr(self, name, module)
        else:
            for i, module in enumerate(modules):
                setattr(self, str(i), module)

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        return items[index][1]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        """Each module applied to the previous one's output."""
        for module in self._modules.values():
            x = module(x)
        return x


class ReLU(Module):
    """max(x, 0), element-wise."""

    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    """tanh(x), element-wise."""

    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x)), element-wise."""

    def forward(self, x):
        return F.sigmoid(x)


class GELU(Module):
    """GELU activation; approximate="none" (erf) or "tanh"."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class LayerNorm(Module):
    """Normalise the last axes to zero mean and unit variance, then scale (weight=1) and
    shift (bias=0)."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, elementwise_affine: bool = True,
                 dtype: DTypeLike = np.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(np.ones(shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, dtype)) if elementwise_affine else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Dropout(Module):
    """Zero elements with probability p in training mode (scaled by 1/(1-p)); identity in eval."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
