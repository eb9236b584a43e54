"""Pieces several algorithms share: the workspace, binary/k-ary trees, pipeline chunks,
and folding a non-power-of-two world onto a power of two."""
import threading
from contextlib import contextmanager

import numpy as np

import kernels
from kernels import reference

from ..partition import largest_power_of_two

# The reducer of the collective running on this thread, while a Communicator's observers
# watch reductions (see `reductions_through`); unset otherwise.
_running = threading.local()


def reduce_into(dst, src, op, reverse=False):
    """dst = dst <op> src (or src <op> dst with reverse=True), through kernels.reduce_into.

    `reverse` lets a pair of ranks combine in one canonical order (lower rank's data on
    the left), which is what makes max/min of signed zeros and NaN payloads agree bitwise.
    While observed (`reductions_through`), the observers' reducer performs it instead.
    """
    reducer = getattr(_running, "reducer", None)
    if reducer is not None:
        return reducer(dst, src, op, reverse)
    return kernels.reduce_into(dst, src, op, reverse=reverse)


def combine_into(out, a, b, op):
    """out = a <op> b: on NumPy arrays in one pass (kernels.reference.combine_into); while
    observed or on other arrays, out = a then reduce_into(out, b, op), so observers see
    every reduction. Bitwise the same either way. out may be a; it must not overlap b."""
    if getattr(_running, "reducer", None) is None and type(out) is type(a) is type(b) is np.ndarray:
        return reference.combine_into(out, a, b, op)
    out[...] = a
    return reduce_into(out, b, op)


def reduce_ordered(result, operands, op, copy_to=None):
    """result = operands[0] <op> operands[1] <op> ... (an iterable of n >= 2 arrays, taken
    one at a time in that (rank) order), so every rank that combines the same operands
    gets the same bits: kernels.reduce_chain_into, or while observed combine_into then
    reduce_into per operand (the observers see every step; the same bits). copy_to, if
    given, then receives result. result may be operands[0]; it must not overlap the
    others; copy_to may overlap any operand. Cost: n-1 passes, each reading two arrays of
    result's size and writing one; one more copy for copy_to.
    """
    if getattr(_running, "reducer", None) is None:
        kernels.reduce_chain_into(result, operands, op)
    else:
        operands = iter(operands)
        combine_into(result, next(operands), next(operands), op)
        for operand in operands:
            reduce_into(result, operand, op)
    if copy_to is not None:
        copy_to[...] = result


def plain_reduce(dst, src, op, reverse):
    """The unobserved reduction: kernels.reduce_into (the end of every reducer chain)."""
    return kernels.reduce_into(dst, src, op, reverse=reverse)


@contextmanager
def reductions_through(reducer):
    """Run this thread's reductions through reducer(dst, src, op, reverse) while inside
    (the Communicator does this around a collective its observers watch)."""
    previous = getattr(_running, "reducer", None)
    _running.reducer = reducer
    try:
        yield
    finally:
        _running.reducer = previous


def nominal_nbytes(t, buf):
    """The bytes `buf` stands for: buf.nbytes, except on a transport that simulates larger
    buffers than it moves (collectives.transport.simulated), which declares how many."""
    scaled = t.capabilities.nominal_nbytes
    return buf.nbytes if scaled is None else scaled(buf)


class Workspace:
    """Scratch buffers reused across calls: the steady state allocates nothing.

    `get(slot, n, like)` returns a 1-D array of n elements with like's dtype (and array
    module), reusing the slot's buffer whenever it is large enough.
    """

    def __init__(self):
        self._buffers = {}

    def get(self, slot, n, like, dtype=None):
        """n elements of like's array module and dtype (or `dtype`), reused per slot."""
        dtype = like.dtype if dtype is None else dtype
        key = (slot, dtype, type(like))
        buf = self._buffers.get(key)
        if buf is None or buf.size < n:
            buf = _empty_like(like, max(n, 1), dtype)
            self._buffers[key] = buf
        return buf[:n]

    def clear(self):
        """Drop every cached buffer."""
        self._buffers.clear()


def _empty_like(like, n, dtype):
    # np.empty_like / cupy.empty_like keep the array module (NumPy or CuPy) of `like`.
    import numpy as np
    return np.empty_like(like, shape=(n,), dtype=dtype)


def tree_links(rank, size, root, arity):
    """(parent, children) of `rank` in the k-ary tree rooted at `root` (arity 1: a chain).

    Ranks are renumbered v = (rank - root) mod size; v's parent is (v-1)//arity and its
    children are arity*v+1 ... arity*v+arity. Depth is about log_arity(size).
    """
    v = (rank - root) % size
    parent = None if v == 0 else ((v - 1) // arity + root) % size
    first = arity * v + 1
    children = [(c + root) % size for c in range(first, min(first + arity, size))]
    return parent, children


class Fold:
    """Folding n ranks onto the largest power of two p <= n, for the doubling/halving families.

    The first 2*(n-p) ranks pair up: each even one hands its data to the odd one after it
    and sits out; the odd one stands for both. The remaining ranks stand for themselves.
    `new` is this rank's number among the p active ranks (None when it sits out), and
    `real(i)` is the real rank of active rank i.
    """

    def __init__(self, rank, size):
        p = largest_power_of_two(size)
        self.p, self.extra = p, size - p
        if rank < 2 * self.extra:
            self.partner = rank + 1 if rank % 2 == 0 else rank - 1
            self.new = None if rank % 2 == 0 else rank // 2
        else:
            self.partner = None
            self.new = rank - self.extra

    def real(self, i):
        return 2 * i + 1 if i < self.extra else i + self.extra

    def first_block(self, i):
        """The first of the original rank blocks active rank i stands for."""
        return 2 * i if i < self.extra else i + self.extra
