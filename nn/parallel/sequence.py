"""Sequence parallelism (Korthikanti et al. 2022): the operators that move activations
between the sequence-split regions (LayerNorm, dropout, residual adds: each rank holds
T/tp of the sequence) and the tensor-parallel regions (attention and MLP: each rank holds
the whole sequence but a slice of the heads / hidden features).

Activations are (B, T, C); the sequence is axis 1 and must divide evenly by the group.
Each operator is an autograd Function whose backward is its forward's conjugate:

    gather_from_sequence_parallel_region       forward: all-gather T     backward: reduce-scatter T
    reduce_scatter_to_sequence_parallel_region forward: reduce-scatter T backward: all-gather T
    scatter_to_sequence_parallel_region        forward: keep own T/tp    backward: all-gather T

An all-reduce is a reduce-scatter followed by an all-gather, so replacing Megatron's
"all-reduce after the row-parallel layer" by "reduce-scatter, (LayerNorm, dropout on T/tp),
all-gather before the next column-parallel layer" moves the same bytes while the regions
between hold 1/tp of the activations. Parameters used inside a sequence-split region
(LayerNorm weights, row-parallel biases) see only T/tp of the tokens on each rank: their
gradients are summed over the group by `copy_to_parallel_region` (identity forward,
all-reduce backward).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import collectives as cc

from ..autograd import Function
from ..tensor import array_module

if TYPE_CHECKING:
    from collectives import Communicator

    from ..tensor import Tensor


def _sequence_first(x):
    """(B, T, ...) -> contiguous (T, B, ...), so that a rank's piece of T is one block."""
    xp = array_module(x)
    return xp.ascontiguousarray(xp.moveaxis(x, 1, 0))


def _check_divides(x, comm):
    if x.shape[1] % comm.size:
        raise ValueError(f"sequence parallelism on rank {comm.rank}: sequence length {x.shape[1]} "
                         f"(axis 1 of shape {tuple(x.shape)}) must divide evenly by the {comm.size} "
                         f"tensor-parallel ranks")


def all_gather_sequence(x: Any, comm: Communicator, algorithm: str = "auto") -> Any:
    """Concatenate every rank's (B, T/tp, ...) along axis 1: (B, T, ...). Cost (ring):
    (tp-1)/tp of the output sent and received per rank."""
    xp = array_module(x)
    gathered = comm.allgather(_sequence_first(x), algorithm=algorithm)
    return xp.ascontiguousarray(xp.moveaxis(gathered, 0, 1))


def reduce_scatter_sequence(x: Any, comm: Communicator, algorithm: str = "auto") -> Any:
    """Sum (B, T, ...) over the ranks and keep this rank's (B, T/tp, ...). Cost (ring):
    (tp-1)/tp of the input sent and received per rank."""
    _check_divides(x, comm)
    first = _sequence_first(x)
    mine = comm.reduce_scatter(first, algorithm=algorithm).reshape((first.shape[0] // comm.size,) + first.shape[1:])
    xp = array_module(x)
    return xp.ascontiguousarray(xp.moveaxis(mine, 0, 1))


def split_sequence(x: Any, comm: Communicator) -> Any:
    """This rank's (B, T/tp, ...) piece of axis 1, no communication."""
    _check_divides(x, comm)
    offsets = cc.partition(x.shape[1], comm.size)
    xp = array_module(x)
    return xp.ascontiguousarray(x[:, offsets[comm.rank]:offsets[comm.rank + 1]])


class _GatherFromSequence(Function):
    @staticmethod
    def forward(ctx, x, comm, algorithm):
        ctx.comm, ctx.algorithm = comm, algorithm
        return all_gather_sequence(x, comm, algorithm)

    @staticmethod
    def backward(ctx, grad):
        return reduce_scatter_sequence(grad, ctx.comm, ctx.algorithm), None, None


class _ReduceScatterToSequence(Function):
    @staticmethod
    def forward(ctx, x, comm, algorithm):
        ctx.comm, ctx.algorithm = comm, algorithm
        return reduce_scatter_sequence(x, comm, algorithm)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_sequence(grad, ctx.comm, ctx.algorithm), None, None


class _ScatterToSequence(Function):
    @staticmethod
    def forward(ctx, x, comm, algorithm):
        ctx.comm, ctx.algorithm = comm, algorithm
        return split_sequence(x, comm)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_sequence(grad, ctx.comm, ctx.algorithm), None, None


def gather_from_sequence_parallel_region(x: Tensor, comm: Communicator, algorithm: str = "auto") -> Tensor:
    """All-gather along the sequence forward (into a tensor-parallel region); reduce-scatter
    of the gradient backward (each rank's gradient there is a partial sum)."""
    return _GatherFromSequence.apply(x, comm, algorithm)


def reduce_scatter_to_sequence_parallel_region(x: Tensor, comm: Communicator,
                                               algorithm: str = "auto") -> Tensor:
    """Reduce-scatter along the sequence forward (partial sums out of a row-parallel layer
    -> this rank's T/tp, complete); all-gather of the gradient backward."""
    return _ReduceScatterToSequence.apply(x, comm, algorithm)


def scatter_to_sequence_parallel_region(x: Tensor, comm: Communicator, algorithm: str = "auto") -> Tensor:
    """Keep this rank's T/tp forward (x is replicated); all-gather the gradient backward."""
    return _ScatterToSequence.apply(x, comm, algorithm)
