"""Tensor: an ndarray (NumPy or CuPy) with a gradient and the graph that made it.

Each operation is one primitive: its forward computes the output array, and the closure
next to it maps the output's gradient to its inputs' gradients. Broadcasting is undone in
one place (`unbroadcast`). Everything else (sub, div, mean, softmax ...) is composed of
primitives or written as a primitive where that is much cheaper.
"""
import numpy as np

from . import autograd
from .autograd import Handle, is_grad_enabled


def array_module(data):
    """numpy, or cupy for CuPy arrays (imported only then)."""
    if isinstance(data, np.ndarray) or np.isscalar(data):
        return np
    if type(data).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def unbroadcast(grad, shape):
    """Sum `grad` back to `shape`, undoing NumPy broadcasting (leading axes, and axes of
    length 1 that were stretched)."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    reduced = grad.sum(axis=axes, keepdims=True) if axes else grad
    return reduced.reshape(shape)


def make(data, parents, backward):
    """The output Tensor of an operation: records the graph when a parent needs a gradient."""
    needs = is_grad_enabled() and any(p.requires_grad for p in parents)
    out = Tensor(data, requires_grad=needs)
    if needs:
        out._parents = tuple(parents)
        out._backward = backward
    return out


def as_tensor(value, like=None):
    """`value` as a Tensor; plain numbers take like's dtype (so 2 * float32 stays float32)."""
    if isinstance(value, Tensor):
        return value
    if like is not None and np.isscalar(value):
        return Tensor(array_module(like.data).asarray(value, dtype=like.dtype))
    return Tensor(value)


class Tensor:
    """An array with autograd. `data` is the ndarray, `grad` its gradient (or None).

    Tensor(data, requires_grad=False): data may be a NumPy or CuPy array, or anything
    numpy.asarray takes.
    """
    __array_priority__ = 100          # ndarray <op> Tensor defers to Tensor

    def __init__(self, data, requires_grad=False):
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
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._backward is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU for CuPy data)."""
        return self.data.get() if array_module(self.data) is not np else self.data

    def item(self):
        """The value of a one-element tensor as a Python number."""
        return self.data.item()

    def detach(self):
        """A Tensor sharing this data, cut from the graph."""
        return Tensor(self.data)

    # -- autograd ------------------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate the gradient of this tensor into every leaf that requires one.

        grad defaults to 1 for a one-element tensor; other shapes need it explicitly.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no parameter "
                               "or requires_grad=True input contributed to it)")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() needs an explicit gradient for a non-scalar output "
                                   f"of shape {self.shape}: pass grad= of that shape, or reduce it "
                                   f"(e.g. .sum()) first")
            grad = array_module(self.data).ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if tuple(grad.shape) != tuple(self.shape):
                raise ValueError(f"backward() gradient has shape {tuple(grad.shape)} but the "
                                 f"tensor has shape {self.shape}")
        autograd.backward(self, grad)

    def register_hook(self, fn):
        """Call fn(grad) with this tensor's gradient before it is used; a non-None return
        replaces the gradient. Returns a handle with remove()."""
        self._hooks.append(fn)
        return Handle(self._hooks, fn)

    def register_post_accumulate_grad_hook(self, fn):
        """For a leaf: call fn(tensor) as soon as its .grad holds everything this backward
        pass contributes (once per pass). Returns a handle with remove()."""
        self._post_hooks.append(fn)
        return Handle(self._post_hooks, fn)

    def _accumulate(self, grad):
        if grad.dtype != self.dtype:
            grad = grad.astype(self.dtype)
        if grad.shape != self.shape:
            grad = grad.reshape(self.shape)
        if self.grad is None:
            self.grad = grad if autograd.owned(grad) else grad.copy()
        else:
            self.grad += grad                      # in place: the .grad array may be a bucket view
        for hook in self._post_hooks:
            hook(self)

    def zero_grad(self):
        self.grad = None

    # -- arithmetic ----------------------------------------------------------------------------
    def __add__(self, other):
        other = as_tensor(other, self)
        out = _broadcast_op(np.add, self, other)
        return make(out, (self, other), lambda g: (unbroadcast(g, self.shape), unbroadcast(g, other.shape)))

    def __mul__(self, other):
        other = as_tensor(other, self)
        out = _broadcast_op(np.multiply, self, other)
        return make(out, (self, other), lambda g: (unbroadcast(g * other.data, self.shape),
                                                   unbroadcast(g * self.data, other.shape)))

    def __truediv__(self, other):
        other = as_tensor(other, self)
        out = _broadcast_op(np.true_divide, self, other)
        return make(out, (self, other), lambda g: (unbroadcast(g / other.data, self.shape),
                                                   unbroadcast(-g * out / other.data, other.shape)))

    def __neg__(self):
        return make(-self.data, (self,), lambda g: (-g,))

    def __sub__(self, other):
        return self + (-as_tensor(other, self))

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return (exponent * self.log()).exp()
        out = self.data ** exponent
        return make(out, (self,), lambda g: (g * exponent * self.data ** (exponent - 1),))

    def __rpow__(self, base):
        return (self * float(np.log(base))).exp()

    __radd__ = __add__
    __rmul__ = __mul__

    def __rsub__(self, other):
        return as_tensor(other, self) - self

    def __rtruediv__(self, other):
        return as_tensor(other, self) / self

    def __matmul__(self, other):
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
            grad_a = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
            grad_b = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
            return grad_a, grad_b
        return make(out, (self, other), backward)

    def __rmatmul__(self, other):
        return as_tensor(other, self) @ self

    # -- reductions ----------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False):
        """Sum over `axis` (all by default); gradient: broadcast back."""
        out = self.data.sum(axis=axis, keepdims=keepdims)
        shape = self.shape

        def backward(g):
            if not keepdims and axis is not None:
                g = np.expand_dims(g, axis)
            return (np.broadcast_to(g, shape),)
        return make(out, (self,), backward)

    def mean(self, axis=None, keepdims=False):
        """Mean over `axis`; the sum divided by the number of elements averaged."""
        count = self.size if axis is None else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
        return self.sum(axis, keepdims) * (1.0 / max(count, 1))

    def max(self, axis=None, keepdims=False):
        """Maximum over `axis`; the gradient goes to the maxima (split evenly among ties)."""
        out = self.data.max(axis=axis, keepdims=True)
        data = self.data

        def backward(g):
            if not keepdims and axis is not None:
                g = np.expand_dims(g, axis)
            elif axis is None and not keepdims:
                g = g.reshape((1,) * data.ndim)
            mask = data == out
            return (mask * (g / mask.sum(axis=axis, keepdims=True)),)
        result = out if keepdims else (out.squeeze(axis) if axis is not None else out.reshape(()))
        return make(result, (self,), backward)

    # -- shape -----------------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        original = self.shape
        return make(self.data.reshape(shape), (self,), lambda g: (g.reshape(original),))

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = tuple(axes) or tuple(reversed(range(self.ndim)))
        inverse = tuple(np.argsort(axes))
        return make(self.data.transpose(axes), (self,), lambda g: (g.transpose(inverse),))

    T = property(lambda self: self.transpose())

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        shape, dtype = self.shape, self.dtype
        module = array_module(self.data)

        def backward(g):
            full = module.zeros(shape, dtype=g.dtype)
            if module is np:
                np.add.at(full, index, g)                  # repeated integer indices add up
            else:
                import cupyx
                cupyx.scatter_add(full, index, g)
            return (full,)
        return make(self.data[index], (self,), backward)

    # -- element-wise functions ------------------------------------------------------------------
    def exp(self):
        out = np.exp(self.data)
        return make(out, (self,), lambda g: (g * out,))

    def log(self):
        return make(np.log(self.data), (self,), lambda g: (g / self.data,))

    def tanh(self):
        out = np.tanh(self.data)
        return make(out, (self,), lambda g: (g * (1 - out * out),))

    def sigmoid(self):
        out = 1 / (1 + np.exp(-self.data))
        return make(out, (self,), lambda g: (g * out * (1 - out),))

    def relu(self):
        data = self.data
        return make(np.maximum(data, 0), (self,), lambda g: (g * (data > 0),))

    def gelu(self, approximate="none"):
        from .functional import gelu
        return gelu(self, approximate)

    def abs(self):
        return make(np.abs(self.data), (self,), lambda g: (g * np.sign(self.data),))

    def sqrt(self):
        return self ** 0.5


def _broadcast_op(ufunc, a, b):
    try:
        return ufunc(a.data, b.data)
    except ValueError:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not broadcast together "
                         f"(in {ufunc.__name__})") from None


def concatenate(tensors, axis=0):
    """Join tensors along `axis`; the gradient is split back into the pieces."""
    tensors = [as_tensor(t) for t in tensors]
    sizes = [t.shape[axis] for t in tensors]
    bounds = np.cumsum(sizes)[:-1]
    module = array_module(tensors[0].data)
    out = module.concatenate([t.data for t in tensors], axis=axis)
    return make(out, tensors, lambda g: tuple(module.split(g, bounds, axis=axis)))


def split(tensor, sections, axis=0):
    """Split into `sections` equal parts (an int) or at the given sizes (a list of ints);
    each part's gradient lands in its slice of the input's gradient."""
    length = tensor.shape[axis]
    if isinstance(sections, int):
        if length % sections:
            raise ValueError(f"cannot split axis {axis} of length {length} into {sections} equal parts")
        sizes = [length // sections] * sections
    else:
        sizes = list(sections)
        if sum(sizes) != length:
            raise ValueError(f"split sizes {sizes} do not add up to axis {axis} length {length}")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for i in range(len(sizes)):
        index = [slice(None)] * tensor.ndim
        index[axis] = slice(int(offsets[i]), int(offsets[i + 1]))
        parts.append(tensor[tuple(index)])
    return parts


def stack(tensors, axis=0):
    """Stack along a new axis (concatenate of expanded tensors)."""
    return concatenate([t.reshape(t.shape[:axis] + (1,) + t.shape[axis:]) for t in map(as_tensor, tensors)], axis)
