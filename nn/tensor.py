"""Tensor: an ndarray (NumPy or CuPy) with a gradient and the graph that made it.

Each operation is one primitive: its forward computes the output array, and the closure
next to it maps the output's gradient to its inputs' gradients. Broadcasting is undone in
one place (`unbroadcast`). Everything else (sub, div, mean, softmax ...) is composed of
primitives or written as a primitive where that is much cheaper.

Array functions come from the data's own module (`array_module`), never from NumPy
directly, so the same code runs on CuPy arrays. Python numbers take the tensor's dtype
(2.0 * a float32 tensor stays float32).
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Optional, Union

import numpy as np

from kernels import arrays
from kernels.arrays import Array

from . import autograd
from .autograd import Handle, is_grad_enabled

Axis = Optional[Union[int, tuple[int, ...]]]    # an axis, several, or None for all


def array_module(data: Any) -> ModuleType:
    """numpy, or cupy for CuPy arrays; plain data (numbers, lists) counts as NumPy's.
    The lookup itself is kernels.arrays.array_module, shared with the collectives."""
    return arrays.array_module(data) or np


def unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum `grad` back to `shape`, undoing NumPy broadcasting (leading axes, and axes of
    length 1 that were stretched)."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    reduced = grad.sum(axis=axes, keepdims=True) if axes else grad
    return reduced.reshape(shape)


def make(data: Array, parents: Sequence[Tensor], backward: Callable[[Array], tuple]) -> Tensor:
    """The output Tensor of an operation: records `parents` and `backward` (output gradient
    -> tuple of one gradient or None per parent) when grad mode is on and a parent needs a
    gradient. The primitive that every op, Function and parallel layer is built on."""
    needs = is_grad_enabled() and any(p.requires_grad for p in parents)
    out = Tensor(data, requires_grad=needs)
    if needs:
        out._parents = tuple(parents)
        out._backward = backward
    return out


def as_tensor(value: Any, like: Tensor | None = None) -> Tensor:
    """`value` as a Tensor; plain numbers take like's dtype (so 2 * float32 stays float32)."""
    if isinstance(value, Tensor):
        return value
    if like is not None and np.isscalar(value):
        return Tensor(array_module(like.data).asarray(value, dtype=like.dtype))
    return Tensor(value)


def _is_basic_index(index):
    """True for indices made of ints, slices, None and Ellipsis (views: no repeated elements)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


class Tensor:
    """An array with autograd. `data` is the ndarray, `grad` its gradient (or None).

    Tensor(data, requires_grad=False): data may be a NumPy or CuPy array, or anything
    numpy.asarray takes. Gradients accumulate across backward passes until reset
    (`t.grad = None`, `t.zero_grad()`, `module.zero_grad()`).
    """
    __array_ufunc__ = None            # ndarray <op> Tensor defers to Tensor's reflected op

    def __init__(self, data: Any, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        if array_module(data) is np and not isinstance(data, np.ndarray):
            data = np.asarray(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None
        self._hooks = []
        self._post_hooks = []

    # -- basic facts ---------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape, doc="The data's shape.")
    dtype = property(lambda self: self.data.dtype, doc="The data's dtype.")
    ndim = property(lambda self: self.data.ndim, doc="The number of axes.")
    size = property(lambda self: self.data.size, doc="The number of elements.")
    is_leaf = property(lambda self: self._backward is None,
                       doc="True unless an op that records the graph produced this tensor.")

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU for CuPy data)."""
        return arrays.to_numpy(self.data)

    def item(self) -> float | int | bool:
        """The value of a one-element tensor as a Python number."""
        return self.data.item()

    def detach(self) -> Tensor:
        """A Tensor sharing this data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set requires_grad on a leaf, in place; returns self."""
        if not self.is_leaf:
            raise RuntimeError("requires_grad_() works on leaves only; use detach() to cut a "
                               "tensor from the graph")
        self.requires_grad = bool(requires_grad)
        return self

    def zero_(self) -> Tensor:
        """Fill the data with zeros, in place; returns self."""
        self.data[...] = 0
        return self

    def zero_grad(self) -> None:
        """Forget the accumulated gradient (grad = None)."""
        self.grad = None

    # -- autograd ------------------------------------------------------------------------------
    def backward(self, grad: Any = None) -> None:
        """Accumulate the gradient of this tensor into every leaf that requires one.

        grad defaults to 1 for a one-element tensor; other shapes need it explicitly (an
        array of this tensor's shape). It is cast to this tensor's dtype.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no parameter "
                               "or requires_grad=True input contributed to it)")
        xp = array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() needs an explicit gradient for a non-scalar output "
                                   f"of shape {self.shape}: pass grad= of that shape, or reduce it "
                                   f"(e.g. .sum()) first")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if np.isscalar(grad) and self.size == 1:
                grad = xp.full(self.shape, grad, dtype=self.dtype)
            if tuple(getattr(grad, "shape", ())) != tuple(self.shape):
                raise ValueError(f"backward() gradient has shape {tuple(np.shape(grad))} but the "
                                 f"tensor has shape {self.shape}")
            grad = grad.astype(self.dtype, copy=False)
        autograd.backward(self, grad)

    def register_hook(self, fn: Callable[[Array], Array | None]) -> Handle:
        """Call fn(grad) with the gradient flowing into this tensor before it is used or
        accumulated; a non-None return replaces the gradient. Returns a handle with remove()."""
        if not self.requires_grad:
            raise RuntimeError("register_hook() on a tensor that does not require grad: it "
                               "would never be called")
        self._hooks.append(fn)
        return Handle(self._hooks, fn)

    def register_post_accumulate_grad_hook(self, fn: Callable[[Tensor], None]) -> Handle:
        """For a leaf that requires grad: call fn(tensor) as soon as its .grad holds every
        contribution of the current backward pass (once per pass in which it gets a
        gradient). Returns a handle with remove()."""
        if not (self.is_leaf and self.requires_grad):
            raise RuntimeError("register_post_accumulate_grad_hook() needs a leaf that requires "
                               "grad (a parameter); use register_hook() on intermediate tensors")
        self._post_hooks.append(fn)
        return Handle(self._post_hooks, fn)

    def _accumulate(self, grad):
        """Add this pass's complete gradient into .grad, then fire the post-accumulate hooks.

        The first gradient is kept without a copy when nothing else refers to it
        (autograd.owned); later ones are added in place, since .grad may be a view into a
        data-parallel bucket."""
        if grad.dtype != self.dtype:
            grad = grad.astype(self.dtype)
        if self.grad is None:
            self.grad = grad if autograd.owned(grad) else grad.copy()
        else:
            self.grad += grad
        for hook in list(self._post_hooks):
            hook(self)

    # -- arithmetic ----------------------------------------------------------------------------
    def __add__(self, other):
        """self + other (broadcasting); gradient: g to each, summed back to its shape."""
        other = as_tensor(other, self)
        out = _broadcast_op(operator.add, self, other)
        return make(out, (self, other), lambda g: (unbroadcast(g, self.shape), unbroadcast(g, other.shape)))

    def __mul__(self, other):
        """self * other (broadcasting); gradient: g * other and g * self."""
        other = as_tensor(other, self)
        out = _broadcast_op(operator.mul, self, other)
        return make(out, (self, other), lambda g: (unbroadcast(g * other.data, self.shape),
                                                   unbroadcast(g * self.data, other.shape)))

    def __truediv__(self, other):
        """self / other (broadcasting); gradient: g / other and -g * out / other."""
        other = as_tensor(other, self)
        out = _broadcast_op(operator.truediv, self, other)
        return make(out, (self, other), lambda g: (unbroadcast(g / other.data, self.shape),
                                                   unbroadcast(-g * out / other.data, other.shape)))

    def __neg__(self):
        """-self; gradient: -g."""
        return make(-self.data, (self,), lambda g: (-g,))

    def __sub__(self, other):
        """self - other: self + (-other)."""
        return self + (-as_tensor(other, self))

    def __pow__(self, exponent):
        """self ** exponent; gradient g * exponent * self ** (exponent - 1). A Tensor
        exponent goes through exp(exponent * log(self)) (positive bases only)."""
        if isinstance(exponent, Tensor):
            return (exponent * self.log()).exp()
        out = self.data ** exponent
        return make(out, (self,), lambda g: (g * exponent * self.data ** (exponent - 1),))

    def __rpow__(self, base):
        """base ** self for a positive number base: exp(self * log(base))."""
        return (self * float(np.log(base))).exp()

    __radd__ = __add__
    __rmul__ = __mul__

    def __rsub__(self, other):
        return as_tensor(other, self) - self

    def __rtruediv__(self, other):
        return as_tensor(other, self) / self

    def __matmul__(self, other):
        """Matrix product as numpy.matmul (1-D operands, batches with broadcasting).

        Gradients: g @ other^T and self^T @ g, summed over broadcast batch axes."""
        other = as_tensor(other, self)
        a, b = self.data, other.data
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul needs at least 1-D operands, got shapes "
                             f"{a.shape} and {b.shape}")
        try:
            out = a @ b
        except ValueError:
            raise ValueError(f"matmul shape mismatch: {a.shape} @ {b.shape} (the last axis of the "
                             f"left operand must equal the {'only' if b.ndim == 1 else 'second-to-last'} "
                             f"axis of the right)") from None

        def backward(g):
            # promote 1-D operands to matrices, as matmul does, then undo broadcasting
            a2 = a.reshape(1, -1) if a.ndim == 1 else a
            b2 = b.reshape(-1, 1) if b.ndim == 1 else b
            batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
            g2 = g.reshape(batch + (a2.shape[-2], b2.shape[-1]))
            grad_a = unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape) if self.requires_grad else None
            grad_b = unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape).reshape(b.shape) if other.requires_grad else None
            return grad_a, grad_b
        return make(out, (self, other), backward)

    def __rmatmul__(self, other):
        return as_tensor(other, self) @ self

    # -- reductions ----------------------------------------------------------------------------
    def sum(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        """Sum over `axis` (all by default); gradient: g broadcast back to the input's shape."""
        out = self.data.sum(axis=axis, keepdims=keepdims)
        shape, xp = self.shape, array_module(self.data)

        def backward(g):
            if not keepdims and axis is not None:
                g = xp.expand_dims(g, axis)
            return (xp.broadcast_to(g, shape),)
        return make(out, (self,), backward)

    def mean(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        """Mean over `axis`: the sum times 1 / (number of elements averaged)."""
        count = self.size if axis is None else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
        return self.sum(axis, keepdims) * (1.0 / max(count, 1))

    def max(self, axis: Axis = None, keepdims: bool = False) -> Tensor:
        """Maximum over `axis`; the gradient goes to the maxima (split evenly among ties)."""
        out = self.data.max(axis=axis, keepdims=True)
        data = self.data

        def backward(g):
            g = g.reshape(out.shape)                     # restore the reduced axes as length 1
            mask = data == out
            return (mask * (g / mask.sum(axis=axis, keepdims=True, dtype=g.dtype)),)
        result = out if keepdims else (out.squeeze(axis) if axis is not None else out.reshape(()))
        return make(result, (self,), backward)

    # -- shape -----------------------------------------------------------------------------------
    def reshape(self, *shape: int) -> Tensor:
        """The same elements in a new shape (one -1 allowed); gradient: g reshaped back."""
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        original = self.shape
        return make(self.data.reshape(shape), (self,), lambda g: (g.reshape(original),))

    def transpose(self, *axes: int) -> Tensor:
        """Permute the axes (reverse them by default); gradient: g with the inverse permutation."""
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = tuple(a % self.ndim for a in axes) or tuple(reversed(range(self.ndim)))
        inverse = tuple(int(i) for i in np.argsort(axes))
        return make(self.data.transpose(axes), (self,), lambda g: (g.transpose(inverse),))

    T = property(lambda self: self.transpose(), doc="The transpose (all axes reversed).")

    def __getitem__(self, index):
        """Indexing by ints, slices and integer arrays (as NumPy); gradient: g placed back
        at the indexed positions, repeated integer indices adding up."""
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        shape, xp, basic = self.shape, array_module(self.data), _is_basic_index(index)

        def backward(g):
            full = xp.zeros(shape, dtype=g.dtype)
            if basic:
                full[index] = g                            # a view: each element at most once
            elif xp is np:
                np.add.at(full, index, g)
            else:
                import cupyx
                cupyx.scatter_add(full, index, g)
            return (full,)
        return make(self.data[index], (self,), backward)

    def masked_fill(self, mask: Any, value: float) -> Tensor:
        """A copy with `value` wherever the boolean `mask` (broadcast to this shape) is True,
        as PyTorch's Tensor.masked_fill; gradient: g where mask is False, 0 where True."""
        mask = mask.data if isinstance(mask, Tensor) else mask
        xp = array_module(self.data)
        mask = xp.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"masked_fill needs a boolean mask, got dtype {mask.dtype}")
        try:
            fits = np.broadcast_shapes(mask.shape, self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to the "
                             f"tensor's shape {self.shape}")
        out = xp.where(mask, xp.asarray(value, dtype=self.dtype), self.data)
        return make(out, (self,), lambda g: (xp.where(mask, xp.zeros((), dtype=g.dtype), g),))

    # -- element-wise functions ------------------------------------------------------------------
    def exp(self) -> Tensor:
        """e ** self; gradient: g * out."""
        out = array_module(self.data).exp(self.data)
        return make(out, (self,), lambda g: (g * out,))

    def log(self) -> Tensor:
        """Natural logarithm; gradient: g / self. NaN for negative inputs, as NumPy."""
        return make(array_module(self.data).log(self.data), (self,), lambda g: (g / self.data,))

    def tanh(self) -> Tensor:
        """Hyperbolic tangent; gradient: g * (1 - out ** 2)."""
        out = array_module(self.data).tanh(self.data)
        return make(out, (self,), lambda g: (g * (1 - out * out),))

    def sigmoid(self) -> Tensor:
        """1 / (1 + e ** -self); gradient: g * out * (1 - out)."""
        out = 1 / (1 + array_module(self.data).exp(-self.data))
        return make(out, (self,), lambda g: (g * out * (1 - out),))

    def relu(self) -> Tensor:
        """max(self, 0); gradient: g where self > 0, else 0."""
        data = self.data
        return make(array_module(data).maximum(data, 0), (self,), lambda g: (g * (data > 0),))

    def gelu(self, approximate: str = "none") -> Tensor:
        """GELU (see nn.functional.gelu)."""
        from .functional import gelu
        return gelu(self, approximate)

    def abs(self) -> Tensor:
        """|self|; gradient: g * sign(self)."""
        xp = array_module(self.data)
        return make(xp.abs(self.data), (self,), lambda g: (g * xp.sign(self.data),))

    def sqrt(self) -> Tensor:
        """self ** 0.5."""
        return self ** 0.5


def _broadcast_op(op, a, b):
    """op(a.data, b.data), with an error naming both shapes when they do not broadcast."""
    try:
        return op(a.data, b.data)
    except ValueError:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not broadcast together "
                         f"(in {op.__name__})") from None


def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along `axis`; the gradient is split back into the pieces."""
    tensors = [as_tensor(t) for t in tensors]
    xp = array_module(tensors[0].data)
    try:
        out = xp.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        raise ValueError(f"concatenate along axis {axis}: shapes {[t.shape for t in tensors]} "
                         f"must agree on every other axis") from None
    bounds = [int(b) for b in np.cumsum([t.shape[axis] for t in tensors])[:-1]]
    return make(out, tensors, lambda g: tuple(xp.split(g, bounds, axis=axis)))


def split(tensor: Tensor, sections: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """Split into `sections` equal parts (an int, as numpy.split) or into pieces of the
    given sizes (a list of ints); each part's gradient lands in its slice of the input's."""
    length = tensor.shape[axis]
    if isinstance(sections, (int, np.integer)):
        if sections <= 0 or length % sections:
            raise ValueError(f"cannot split axis {axis} of length {length} into {sections} equal parts")
        sizes = [length // sections] * int(sections)
    else:
        sizes = [int(n) for n in sections]
        if sum(sizes) != length:
            raise ValueError(f"split sizes {sizes} do not add up to axis {axis} length {length}")
    parts, start = [], 0
    for size in sizes:
        index = [slice(None)] * tensor.ndim
        index[axis] = slice(start, start + size)
        parts.append(tensor[tuple(index)])
        start += size
    return parts


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Stack along a new axis (concatenate of tensors given a length-1 axis there)."""
    tensors = [as_tensor(t) for t in tensors]
    position = axis % (tensors[0].ndim + 1)
    return concatenate([t.reshape(t.shape[:position] + (1,) + t.shape[position:]) for t in tensors], position)
