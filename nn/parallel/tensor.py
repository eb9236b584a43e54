"""Tensor (model) parallelism in the Megatron style: one layer's weight split over ranks.

Four conjugate operators move activations and gradients between the shards. Each is a
tiny autograd Function whose backward is the conjugate of its forward:

    copy_to_parallel_region      forward: identity         backward: all-reduce (sum)
    reduce_from_parallel_region  forward: all-reduce (sum) backward: identity
    gather_from_parallel_region  forward: all-gather       backward: split (keep own slice)
    scatter_to_parallel_region   forward: split            backward: all-gather

(all along the last axis). The layers are built from them:

    ColumnParallelLinear: rank r holds rows cc.partition(out, tp)[r] of the (out, in)
        weight: y_r = x W_r^T + b_r. Its input is replicated, so the input's gradient is
        the sum of every rank's contribution: copy_to_parallel_region.
    RowParallelLinear: rank r holds columns cc.partition(in, tp)[r] and sees the matching
        slice of the input; the partial products are summed (reduce_from_parallel_region)
        and the full bias is added once after the reduction.
    ParallelMLP = column-parallel -> activation -> row-parallel: one all-reduce forward,
        one backward, and the hidden activations never leave their rank.

With sequence_parallel=True (see sequence.py) the column-parallel layer's input is this
rank's T/tp of the sequence, all-gathered on the way in, and the row-parallel layer's
output is reduce-scattered back to T/tp: the all-reduce becomes its two halves.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

import collectives as cc

from .. import functional as F
from ..autograd import Function
from ..init import linear_parameters
from ..modules import GELU, Linear, Module, Parameter, ReLU, Tanh
from ..tensor import array_module
from .sequence import gather_from_sequence_parallel_region, reduce_scatter_to_sequence_parallel_region

if TYPE_CHECKING:
    from collectives import Communicator

    from ..modules import Sequential
    from ..tensor import Tensor


def _last_axis_first(array):
    xp = array_module(array)
    return xp.ascontiguousarray(xp.moveaxis(array, -1, 0))


def _split_last(array, comm):
    """This rank's slice of the last axis (cc.partition convention)."""
    offsets = cc.partition(array.shape[-1], comm.size)
    return array_module(array).ascontiguousarray(array[..., offsets[comm.rank]:offsets[comm.rank + 1]])


def _gather_last(array, comm):
    """Concatenate every rank's `array` along the last axis (equal shapes on all ranks)."""
    gathered = comm.allgather(_last_axis_first(array))          # (size * k, ...)
    xp = array_module(gathered)
    return xp.ascontiguousarray(xp.moveaxis(gathered, 0, -1))


def _allreduce(x, comm, algorithm):
    xp = array_module(x)
    x = xp.ascontiguousarray(x)
    return comm.allreduce(x, "sum", algorithm=algorithm, out=xp.empty_like(x))


def _shard(array, index, dtype):
    """A copy of array[index] with `dtype`, in the array's own module (NumPy or CuPy)."""
    return array_module(array).array(array[index], dtype=dtype)


class _CopyToParallel(Function):
    @staticmethod
    def forward(ctx, x, comm, algorithm):
        ctx.comm, ctx.algorithm = comm, algorithm
        return x

    @staticmethod
    def backward(ctx, grad):
        return _allreduce(grad, ctx.comm, ctx.algorithm), None, None


class _ReduceFromParallel(Function):
    @staticmethod
    def forward(ctx, x, comm, algorithm):
        return _allreduce(x, comm, algorithm)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


class _GatherFromParallel(Function):
    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return _gather_last(x, comm)

    @staticmethod
    def backward(ctx, grad):
        return _split_last(grad, ctx.comm), None


class _ScatterToParallel(Function):
    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return _split_last(x, comm)

    @staticmethod
    def backward(ctx, grad):
        return _gather_last(grad, ctx.comm), None


def copy_to_parallel_region(x: Tensor, comm: Communicator, algorithm: str = "auto") -> Tensor:
    """Identity forward; all-reduce of the gradient backward (replicated input -> shards)."""
    return _CopyToParallel.apply(x, comm, algorithm)


def reduce_from_parallel_region(x: Tensor, comm: Communicator, algorithm: str = "auto") -> Tensor:
    """All-reduce forward (sum the shards' partial results); identity backward."""
    return _ReduceFromParallel.apply(x, comm, algorithm)


def gather_from_parallel_region(x: Tensor, comm: Communicator) -> Tensor:
    """All-gather along the last axis forward; keep this rank's slice of the gradient backward."""
    return _GatherFromParallel.apply(x, comm)


def scatter_to_parallel_region(x: Tensor, comm: Communicator) -> Tensor:
    """Keep this rank's slice of the last axis forward; all-gather the gradient backward."""
    return _ScatterToParallel.apply(x, comm)


class ColumnParallelLinear(Module):
    """y = x W^T + b with W's rows (output features) split over the ranks of `comm`.

    gather_output=False leaves y split along its last axis (feed it to a RowParallelLinear);
    True all-gathers it (then out_features must divide evenly by comm.size).
    sequence_parallel=True takes this rank's (B, T/tp, in) and all-gathers the sequence
    first (reduce-scatter of the input gradient backward) instead of copying x.
    offsets: the boundaries of the rows each rank keeps (default cc.partition(out, tp)).
    """

    def __init__(self, in_features: int, out_features: int, comm: Communicator, bias: bool = True,
                 gather_output: bool = False, dtype: DTypeLike = np.float32, algorithm: str = "auto",
                 sequence_parallel: bool = False, offsets: Sequence[int] | None = None, _weights=None):
        super().__init__()
        self.algorithm, self.sequence_parallel = algorithm, sequence_parallel
        if gather_output and out_features % comm.size:
            raise ValueError(f"ColumnParallelLinear: gather_output=True needs out_features "
                             f"({out_features}) divisible by the {comm.size} ranks; use "
                             f"gather_output=False and a RowParallelLinear next")
        self.comm = comm
        self.in_features, self.out_features, self.gather_output = in_features, out_features, gather_output
        weight, full_bias = _weights or linear_parameters(in_features, out_features, bias, dtype)
        offsets = offsets or cc.partition(out_features, comm.size)
        rows = slice(offsets[comm.rank], offsets[comm.rank + 1])
        self.weight = Parameter(_shard(weight, rows, dtype))
        self.bias = Parameter(_shard(full_bias, rows, dtype)) if full_bias is not None else None

    @classmethod
    def from_linear(cls, linear: Linear, comm: Communicator, gather_output: bool = False,
                    **options: Any) -> ColumnParallelLinear:
        """Shard an existing nn.Linear: this rank keeps its rows of weight and bias.
        options: algorithm, sequence_parallel (as the constructor)."""
        bias = None if linear.bias is None else linear.bias.data
        return cls(linear.in_features, linear.out_features, comm, bias=bias is not None,
                   gather_output=gather_output, dtype=linear.weight.dtype,
                   _weights=(linear.weight.data, bias), **options)

    def forward(self, x):
        if self.sequence_parallel:
            x = gather_from_sequence_parallel_region(x, self.comm, self.algorithm)
        else:
            x = copy_to_parallel_region(x, self.comm, self.algorithm)
        y = F.linear(x, self.weight, self.bias)
        return gather_from_parallel_region(y, self.comm) if self.gather_output else y

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features} "
                f"({self.weight.shape[0]} here), rank {self.comm.rank} of {self.comm.size}")


class RowParallelLinear(Module):
    """y = x W^T + b with W's columns (input features) split over the ranks of `comm`.

    input_is_parallel=True expects this rank's slice of x's last axis (the output of a
    ColumnParallelLinear); False takes the full x and keeps its own slice. The bias is
    held whole and added once, after the partial products are summed.
    sequence_parallel=True reduce-scatters the sum along the sequence (axis 1) instead of
    all-reducing it: the output is this rank's (B, T/tp, out), and the bias gradient, from
    T/tp tokens, is summed over the group.
    offsets: the boundaries of the columns each rank keeps (default cc.partition(in, tp)).
    """

    def __init__(self, in_features: int, out_features: int, comm: Communicator, bias: bool = True,
                 input_is_parallel: bool = True, dtype: DTypeLike = np.float32, algorithm: str = "auto",
                 sequence_parallel: bool = False, offsets: Sequence[int] | None = None, _weights=None):
        super().__init__()
        self.comm, self.algorithm, self.sequence_parallel = comm, algorithm, sequence_parallel
        self.in_features, self.out_features = in_features, out_features
        self.input_is_parallel = input_is_parallel
        weight, full_bias = _weights or linear_parameters(in_features, out_features, bias, dtype)
        offsets = offsets or cc.partition(in_features, comm.size)
        columns = slice(offsets[comm.rank], offsets[comm.rank + 1])
        self.weight = Parameter(_shard(weight, (slice(None), columns), dtype))
        self.bias = Parameter(_shard(full_bias, ..., dtype)) if full_bias is not None else None

    @classmethod
    def from_linear(cls, linear: Linear, comm: Communicator, input_is_parallel: bool = True,
                    **options: Any) -> RowParallelLinear:
        """Shard an existing nn.Linear: this rank keeps its columns of the weight.
        options: algorithm, sequence_parallel (as the constructor)."""
        bias = None if linear.bias is None else linear.bias.data
        return cls(linear.in_features, linear.out_features, comm, bias=bias is not None,
                   input_is_parallel=input_is_parallel, dtype=linear.weight.dtype,
                   _weights=(linear.weight.data, bias), **options)

    def forward(self, x):
        if not self.input_is_parallel:
            x = scatter_to_parallel_region(x, self.comm)
        if x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"RowParallelLinear on rank {self.comm.rank} expects its slice of "
                             f"{self.weight.shape[1]} input features, got shape {x.shape}")
        partial = F.linear(x, self.weight)
        if self.sequence_parallel:
            y = reduce_scatter_to_sequence_parallel_region(partial, self.comm, self.algorithm)
            bias = None if self.bias is None else copy_to_parallel_region(self.bias, self.comm, self.algorithm)
        else:
            y, bias = reduce_from_parallel_region(partial, self.comm, self.algorithm), self.bias
        return y + bias if bias is not None else y

    def extra_repr(self):
        return (f"in_features={self.in_features} ({self.weight.shape[1]} here), "
                f"out_features={self.out_features}, rank {self.comm.rank} of {self.comm.size}")


_ACTIVATIONS = {"gelu": lambda: GELU(), "gelu_tanh": lambda: GELU("tanh"), "relu": ReLU, "tanh": Tanh}


class ParallelMLP(Module):
    """dim -> hidden -> dim with the hidden layer split over `comm`: a column-parallel
    linear, the activation, a row-parallel linear. One all-reduce in forward (after the
    row-parallel layer) and one in backward (into the column-parallel layer's input)."""

    def __init__(self, dim: int, hidden: int, comm: Communicator, activation: str = "gelu", bias: bool = True,
                 dtype: DTypeLike = np.float32, algorithm: str = "auto"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.fc1 = ColumnParallelLinear(dim, hidden, comm, bias=bias, dtype=dtype, algorithm=algorithm)
        self.act = _ACTIVATIONS[activation]()
        self.fc2 = RowParallelLinear(hidden, dim, comm, bias=bias, dtype=dtype, algorithm=algorithm)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def unsharded_mlp(dim: int, hidden: int, activation: str = "gelu", bias: bool = True,
                  dtype: DTypeLike = np.float32) -> Sequential:
    """The nn.Sequential that ParallelMLP splits, drawing the same weights from the same seed."""
    from ..modules import Sequential
    return Sequential(Linear(dim, hidden, bias=bias, dtype=dtype), _ACTIVATIONS[activation](),
                      Linear(hidden, dim, bias=bias, dtype=dtype))


class ProcessGrid:
    """Ranks arranged as dp x tp: tensor-parallel groups are `tp` consecutive ranks, and the
    data-parallel groups join the ranks at the same position in every tp group.

    grid.tp and grid.dp are the two communicators (made by comm.split); grid.tp_rank and
    grid.dp_rank this rank's place in each.
    """

    def __init__(self, comm: Communicator, tp: int):
        if not isinstance(tp, int) or tp < 1 or comm.size % tp:
            raise ValueError(f"tp must be a positive divisor of the world size {comm.size}, got {tp!r}")
        self.world = comm
        self.tp_size, self.dp_size = tp, comm.size // tp
        self.tp = comm.split(comm.rank // tp, key=comm.rank)
        self.dp = comm.split(comm.rank % tp, key=comm.rank)
        self.tp_rank, self.dp_rank = self.tp.rank, self.dp.rank

    def __repr__(self):
        return (f"ProcessGrid(rank {self.world.rank}: tp rank {self.tp_rank} of {self.tp_size}, "
                f"dp rank {self.dp_rank} of {self.dp_size})")
