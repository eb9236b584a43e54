"""The autograd engine: grad mode, custom functions, and the backward pass.

Every Tensor produced by an operation remembers its parents and a closure that maps the
gradient of the output to the gradients of the parents. `backward()` walks that graph
from the loss in dependency order (Kahn's algorithm, iterative: deep graphs never hit the
recursion limit): a node runs once all of its consumers have delivered their gradient to
it, and a leaf is accumulated (and its post-accumulate hooks fire) the moment its last
consumer has run. Later layers therefore finish their parameter gradients first, which is
what lets data-parallel training start all-reducing them while backward goes on.

Custom operations (tensor parallelism uses them) subclass `Function`:

    class Double(Function):
        @staticmethod
        def forward(ctx, x):          # x: an ndarray; ctx: a place to keep things
            return x * 2
        @staticmethod
        def backward(ctx, grad):      # one gradient per forward argument (None: no gradient)
            return grad * 2
    y = Double.apply(t)
"""
import sys
import threading
from collections import deque
from contextlib import contextmanager

_state = threading.local()     # per thread: in-process ranks each run their own graphs


def is_grad_enabled():
    """Whether operations currently record the graph."""
    return getattr(_state, "grad_enabled", True)


@contextmanager
def no_grad():
    """Within this block operations record nothing (inference, optimizer updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


def queue_callback(fn):
    """Run fn() once when the current backward pass has finished (all gradients
    accumulated, all hooks fired). Only valid during a backward pass."""
    callbacks = getattr(_state, "callbacks", None)
    if callbacks is None:
        raise RuntimeError("queue_callback() can only be called during a backward pass "
                           "(e.g. from a gradient hook)")
    callbacks.append(fn)


class _Context:
    """What a Function's forward keeps for its backward (`ctx.save_for_backward(...)`)."""

    def save_for_backward(self, *values):
        self.saved = values


class Function:
    """Base class of custom differentiable operations (see the module docstring)."""

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        from .tensor import Tensor, make
        ctx = _Context()
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw)
        tensors = [a for a in args if isinstance(a, Tensor)]
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]

        def backward(grad):
            grads = cls.backward(ctx, grad)
            if not isinstance(grads, tuple):
                grads = (grads,)
            return tuple(grads[i] for i in positions)
        return make(out, tensors, backward)


class Handle:
    """Returned by hook registrations; remove() unregisters the hook."""

    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)


def _graph(root):
    """Nodes reachable from root that need a gradient, and how many consumers each has."""
    consumers = {id(root): 0}
    nodes = {id(root): root}
    stack = [root]
    while stack:
        node = stack.pop()
        for parent in node._parents:
            if not parent.requires_grad:
                continue
            key = id(parent)
            if key not in nodes:
                nodes[key] = parent
                consumers[key] = 0
                stack.append(parent)
            consumers[key] += 1
    return nodes, consumers


def backward(root, grad):
    """Accumulate d(root)/d(leaf) * grad into every leaf's .grad (see module docstring)."""
    nodes, pending = _graph(root)
    grads = {id(root): grad}
    ready = deque([root])
    outer = getattr(_state, "callbacks", None)
    _state.callbacks = [] if outer is None else outer
    try:
        def release(parent):
            key = id(parent)
            pending[key] -= 1
            if pending[key] == 0:
                # leaves first: their gradients are final now, let hooks see them early
                (ready.appendleft if parent._backward is None else ready.append)(parent)

        while ready:
            node = ready.popleft()
            g = grads.pop(id(node), None)
            if g is None:                       # nothing flowed here: release the inputs anyway
                for parent in node._parents:
                    if parent.requires_grad:
                        release(parent)
                continue
            for hook in node._hooks:
                replaced = hook(g)
                if replaced is not None:
                    g = replaced
            if node._backward is None:
                node._accumulate(g)
                continue
            parent_grads = node._backward(g)
            del g
            for parent, parent_grad in zip(node._parents, parent_grads):
                if not parent.requires_grad:
                    continue
                if parent_grad is not None:
                    previous = grads.get(id(parent))
                    grads[id(parent)] = parent_grad if previous is None else previous + parent_grad
                release(parent)
            # drop our references, so that a leaf may keep its gradient array without a copy
            parent_grads = parent_grad = previous = None
        if outer is None:
            callbacks = _state.callbacks
            _state.callbacks = None
            for fn in callbacks:
                fn()
    finally:
        if outer is None:
            _state.callbacks = None


def owned(array):
    """True when the engine may keep `array` as a gradient without copying: it owns its
    memory and nothing but the engine's own frames refer to it (as PyTorch's gradient
    accumulation does, by reference count)."""
    return getattr(array, "base", None) is None and sys.getrefcount(array) <= OWNED_REFCOUNT


OWNED_REFCOUNT = 4   # the caller's frame, Tensor._accumulate's frame, owned()'s frame, getrefcount's argument
