"""The algorithm registry: for each collective, its algorithms by name.

Every algorithm of one collective has the same signature:
    allreduce(t, x, out, op, ws)                  x into out (1-D; x is out: in place)
    reduce_scatter(t, x, out, op, offsets, ws)    out = this rank's block of the reduction
    allgather(t, buf, offsets, ws)                in place, block r filled by the caller
    broadcast(t, buf, root, ws)                   in place
    reduce(t, work, op, root, ws)                 result in root's work
t is the transport, op a combine op ("sum", "prod", "max", "min"), ws the Workspace.
"""
from .. import tuning
from . import native, recursive, ring, tree

NATIVE = "mpi"


def _tree_allreduce(t, x, out, op, ws):
    depth = tuning.tree_depth(t.size, 2)
    m = tuning.DEFAULT
    chunks = tuning.pipeline_chunks(x.nbytes, depth, 2 * (m.beta + m.gamma))
    tree.allreduce(t, x, out, op, ws, chunks=chunks)


def _rooted(function, arity, reduces):
    """A tree/pipeline broadcast or reduce with arity fixed and chunks from the cost model."""
    def run(t, buf, *args):
        m = tuning.DEFAULT
        per_byte = arity * (m.beta + (m.gamma if reduces else 0.0))
        chunks = tuning.pipeline_chunks(buf.nbytes, tuning.tree_depth(t.size, arity), per_byte)
        return function(t, buf, *args, arity=arity, chunks=chunks)
    run.__doc__ = f"{function.__qualname__} with arity {arity} (see that function)."
    return run


ALGORITHMS = {
    "allreduce": {
        "ring": ring.allreduce,
        "tree": _tree_allreduce,
        "recursive_doubling": recursive.allreduce,
        "rabenseifner": recursive.rabenseifner,
        NATIVE: native.allreduce,
    },
    "reduce_scatter": {
        "ring": ring.reduce_scatter,
        "recursive_halving": recursive.reduce_scatter,
        NATIVE: native.reduce_scatter,
    },
    "allgather": {
        "ring": ring.allgather,
        "recursive_doubling": recursive.allgather,
        NATIVE: native.allgather,
    },
    "broadcast": {
        "tree": _rooted(tree.broadcast, 2, reduces=False),
        "pipeline": _rooted(tree.broadcast, 1, reduces=False),
        NATIVE: native.broadcast,
    },
    "reduce": {
        "tree": _rooted(tree.reduce, 2, reduces=True),
        "pipeline": _rooted(tree.reduce, 1, reduces=True),
        "ring": ring.reduce,
        NATIVE: native.reduce,
    },
}


def names(collective, transport):
    """Algorithm names valid for `collective` over `transport` ("mpi" only where it is native)."""
    has_native = hasattr(transport, "native_" + collective)
    return [name for name in ALGORITHMS[collective] if name != NATIVE or has_native]
