"""The "mpi4py" rows: MPI's own collective called straight from mpi4py on the benchmark's
buffers, with none of the engine's code on the path.

The "mpi" rows are the engine's algorithm "mpi": the same MPI call, but behind
`comm.allreduce(...)` and friends (argument checks, the plan lookup, the flight recorder,
the call bookkeeping). That is the fair baseline for choosing an algorithm inside the
engine; it is not what a program calling MPI itself pays. With 4 ranks on 2 cores the
engine's path costs tens of microseconds a call, as much as MPI's whole 8-byte all-reduce,
so where calls are small only the "mpi4py" row says how the engine compares with MPI.
Host buffers only (a GPU run would need a CUDA-aware MPI), and only where MPI has the op
("avg" is the engine's own).
"""
from typing import Callable

import numpy as np

import collectives as cc

ROW = "mpi4py"


def baseline(collective: str) -> Callable:
    """A `Collective.baselines` function offering the ROW row for `collective` (a key of
    `calls`): MPI's call on MPI_COMM_WORLD, returning the result array as the engine's
    call would. Where the row cannot be offered it says why, once, and offers nothing.
    Cost per call: the MPI call and two Python function calls (block counts are worked
    out once per size, as MPI's caller would)."""
    reduces = collective in REDUCING

    def offer(comm, args, say):
        from mpi4py import MPI
        world = MPI.COMM_WORLD
        reason = _unavailable(comm, args, world, reduces)
        if reason is None:
            reason = _probe(world, args, reduces)
        if reason is not None:
            say(f"# {ROW}: {reason}; no {ROW} rows")
            return {}
        call = calls(MPI)[collective]
        op = _mpi_op(MPI, args.op) if reduces else None

        def run(comm, x, out, op_name, root, inplace):
            return call(world, x, out, op, root, inplace)
        return {ROW: run}
    return offer


REDUCING = frozenset({"allreduce", "reduce_scatter", "reduce"})


def calls(MPI) -> dict:
    """{collective: call(world, x, out, op, root, inplace) -> result}: MPI's own collective
    on the buffers the benchmark passes our call (in place: out is None, or for allgather x
    is this rank's block of out)."""
    counts = {}

    def blocks(x, world):              # cc.partition's block counts, once per size
        if x.size not in counts:
            counts[x.size] = np.diff(cc.partition(x.size, world.Get_size())).tolist()
        return counts[x.size]

    def allreduce(world, x, out, op, root, inplace):
        if inplace:
            world.Allreduce(MPI.IN_PLACE, x, op)
            return x
        world.Allreduce(x, out, op)
        return out

    def reduce_scatter(world, x, out, op, root, inplace):
        world.Reduce_scatter(x, out, blocks(x, world), op)
        return out

    def allgather(world, x, out, op, root, inplace):
        world.Allgather(MPI.IN_PLACE if inplace else x, out)
        return out

    def broadcast(world, x, out, op, root, inplace):
        world.Bcast(x, root)
        return x

    def reduce(world, x, out, op, root, inplace):
        on_root = world.rank == root
        if inplace:
            world.Reduce(MPI.IN_PLACE if on_root else x, x if on_root else None, op, root)
            return x
        world.Reduce(x, out, op, root)
        return out

    def alltoall(world, x, out, op, root, inplace):
        world.Alltoall(x, out)
        return out

    def gather(world, x, out, op, root, inplace):      # a new result per call, as comm.gather's
        gathered = np.empty_like(x, shape=(world.size * x.size,)) if world.rank == root else None
        world.Gather(x, gathered, root)
        return gathered

    def scatter(world, x, out, op, root, inplace):
        world.Scatterv([x, blocks(x, world)] if world.rank == root else None, out, root)
        return out
    return {"allreduce": allreduce, "reduce_scatter": reduce_scatter, "allgather": allgather,
            "broadcast": broadcast, "reduce": reduce, "alltoall": alltoall, "gather": gather,
            "scatter": scatter}


OPS = ("sum", "prod", "max", "min")       # the ops MPI has, each its MPI.<NAME>


def _mpi_op(MPI, op):
    return getattr(MPI, op.upper())


def _unavailable(comm, args, world, reduces):
    """Why the row cannot be offered in this run, or None."""
    if args.device != "cpu":
        return "GPU buffers (calling MPI on them needs a CUDA-aware MPI)"
    if comm.size != world.Get_size():
        return f"the communicator has {comm.size} of the {world.Get_size()} ranks of MPI_COMM_WORLD"
    if reduces and args.op not in OPS:
        return f"MPI has no op {args.op!r}"
    return None


def _probe(world, args, reduces):
    """One MPI call of one element of the run's dtype (an all-reduce with the run's op, or
    a broadcast): the reason if MPI refuses the type (on every rank alike, so no rank is
    left waiting), else None."""
    from mpi4py import MPI
    x = np.ones(1, args.datatype)
    try:
        if reduces:
            world.Allreduce(MPI.IN_PLACE, x, _mpi_op(MPI, args.op))
        else:
            world.Bcast(x, 0)
    except Exception as error:                       # MPI or mpi4py refusing the type
        return f"MPI refused {args.datatype} ({type(error).__name__}: {error})"
    return None
