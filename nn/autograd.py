"""The autograd engine: grad mode, custom functions, and the backward pass.

Every Tensor produced by an operation remembers its parents and a closure that maps the
gradient of the output to the gradients of the parents. `backward()` walks that graph
from the loss in dependency order (Kahn's algorithm, iterative: deep graphs never hit the
recursion limit): a node runs once all of its consumers have delivered their gradient to
it, and a leaf is accumulated (and its post-accumulate hooks fire) the moment its last
consumer has run. Later layers therefore finish their parameter gradients first, which is
what lets data-parallel training start all-reducing them while backward goes on.

Custom operations (tensor parallelism uses them) subclass `Function`, as in PyTorch:

    class Scale(Function):
        @staticmethod
        def forward(ctx, x, factor):  # Tensors arrive as their ndarrays; other arguments as given
            ctx.factor = factor       # ctx keeps what backward needs (or ctx.save_for_backward(...))
            return x * factor         # one ndarray out
        @staticmethod
        def backward(ctx, grad):      # grad: ndarray shaped like forward's output
            return grad * ctx.factor, None   # one entry per forward argument; None: no gradient
    y = Scale.apply(t, 3.0)           # a Tensor in the graph when t requires a gradient

backward may return a single array when forward took one argument. Each returned gradient
must have its input's shape: the engine raises naming the op otherwise.

Hooks, for data-parallel training:
- `t.register_hook(fn)`: fn(grad) sees (and may replace) the gradient flowing into t.
- `leaf.register_post_accumulate_grad_hook(fn)`: fn(leaf) runs once per backward pass, as
  soon as leaf.grad holds every contribution of that pass.
- `queue_callback(fn)`: from inside a backward pass, run fn() once when the pass ends.
"""
from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_state = threading.local()     # per thread: in-process ranks each run their own graphs


def is_grad_enabled() -> bool:
    """Whether operations currently record the graph."""
    return getattr(_state, "grad_enabled", True)


@contextmanager
def no_grad() -> Iterator[None]:
    """Within this block operations record nothing (inference, optimizer updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


def queue_callback(fn: Callable[[], None]) -> None:
    """Run fn() once when the current backward pass has finished (all gradients
    accumulated, all hooks fired). Only valid during a backward pass."""
    callbacks = getattr(_state, "callbacks", None)
    if callbacks is None:
        raise RuntimeError("queue_callback() can only be called during a backward pass "
                           "(e.g. from a gradient hook)")
    callbacks.append(fn)


class _Context:
    """What a Function's forward keeps for its backward: any attribute, or
    `ctx.save_for_backward(*arrays)` read back as `ctx.saved_tensors`.
    `ctx.needs_input_grad[i]` says whether argument i is a Tensor that needs a gradient."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()

    def save_for_backward(self, *values):
        self.saved_tensors = values


class Function:
    """Base class of custom differentiable operations (see the module docstring)."""

    @staticmethod
    def forward(ctx, *args):
        """Compute the output ndarray from the arguments (Tensors passed as their data)."""
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        """Map the output's gradient to one gradient (or None) per forward argument."""
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Any:
        """Run forward on the arguments and record the op in the graph; returns a Tensor."""
        from .tensor import Tensor, make
        ctx = _Context(tuple(isinstance(a, Tensor) and a.requires_grad for a in args))
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw)
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]

        def backward(grad):
            grads = cls.backward(ctx, grad)
            if not isinstance(grads, (tuple, list)):
                grads = (grads,)
            if len(grads) != len(args):
                raise RuntimeError(f"{cls.__name__}.backward returned {len(grads)} gradients, "
                                   f"forward took {len(args)} arguments (return None for the "
                                   f"ones without a gradient)")
            return tuple(grads[i].data if isinstance(grads[i], Tensor) else grads[i] for i in positions)
        backward.__qualname__ = f"{cls.__name__}.backward"
        return make(out, [args[i] for i in positions], backward)


class Handle:
    """Returned by hook registrations; remove() unregisters the hook."""

    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self) -> None:
        """Unregister the hook (a second call does nothing)."""
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
            if node._hooks:
                g = _run_hooks(node._hooks, g)
            if node._backward is None:
                node._accumulate(g)
                continue
            parent_grads = node._backward(g)
            del g
            for parent, parent_grad in zip(node._parents, parent_grads):
                if not parent.requires_grad:
                    continue
                if parent_grad is not None:
                    if parent_grad.shape != parent.shape:
                        raise RuntimeError(f"{_op_name(node)} returned a gradient of shape "
                                           f"{tuple(parent_grad.shape)} for an input of shape {parent.shape}")
                    previous = grads.get(id(parent))
                    grads[id(parent)] = parent_grad if previous is None else previous + parent_grad
                release(parent)
            # drop our references, so that a leaf may keep its gradient array without a copy
            parent_grads = parent_grad = previous = None
        if outer is None:
            callbacks, done = _state.callbacks, 0
            while done < len(callbacks):          # a callback may queue another: run it too
                callbacks[done]()
                done += 1
    finally:
        if outer is None:
            _state.callbacks = None


def _run_hooks(hooks, grad):
    """Pass grad through each register_hook function in turn (None keeps it)."""
    from .tensor import Tensor
    for hook in list(hooks):
        replaced = hook(grad)
        if replaced is not None:
            grad = replaced.data if isinstance(replaced, Tensor) else replaced
    return grad


def _op_name(node):
    """A readable name of the op that made `node` (for error messages)."""
    name = getattr(node._backward, "__qualname__", "an op")
    return name.replace(".<locals>", "").replace(".<lambda>", "").replace(".backward", "") + " backward"


# The reference-count rule. An array that only the engine holds is named by exactly
# OWNED_REFCOUNT references when owned() looks at it: `g` in backward()'s loop, `grad` in
# Tensor._accumulate, `array` here, and getrefcount's own argument (4 on CPython 3.11;
# _frame_refcount measures it at import through the same chain of calls, since Python
# versions count frame references differently). Anyone else holding it (the caller kept
# it, another tensor's .data or .grad, a closure that saved it for its own backward) adds
# one, so owned() says False and .grad gets a copy instead of sharing memory with them. A
# view (base is not None) shares its base's memory and is never owned. Check it with
# `python -c "import nn.autograd as a; print(a.OWNED_REFCOUNT)"` and the two
# test_first_gradient_* tests in tests/test_nn_autograd.py.
def owned(array: Any) -> bool:
    """True when the engine may keep `array` as a gradient without copying: it owns its
    memory and nothing but the engine's own frames refer to it (as PyTorch's gradient
    accumulation does, by reference count). Called from Tensor._accumulate only."""
    return getattr(array, "base", None) is None and sys.getrefcount(array) <= OWNED_REFCOUNT


def _frame_refcount():
    """The count owned() sees for an array held by nothing but the engine's frames:
    measured through the same chain of calls (backward's local -> Tensor._accumulate's
    argument -> owned's argument), since interpreters count frame references differently."""
    def owned_probe(array):
        return sys.getrefcount(array)

    def accumulate_probe(grad):
        return owned_probe(grad)

    def backward_probe():
        g = object()
        return accumulate_probe(g)
    return backward_probe()


OWNED_REFCOUNT = _frame_refcount()   # 4 on CPython 3.11: three frames and getrefcount's argument
