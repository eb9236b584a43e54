"""The algorithm registry: for each collective, its algorithms by name.

Every algorithm of one collective has the same signature:
    allreduce(t, x, out, op, ws)                  x into out (1-D; x is out: in place)
    reduce_scatter(t, x, out, op, offsets, ws)    out = this rank's block of the reduction
    allgather(t, buf, offsets, ws)                in place, block r filled by the caller
    broadcast(t, buf, root, ws)                   in place
    reduce(t, work, op, root, ws)                 result in root's work
    alltoall(t, x, out, send_offsets, recv_offsets, ws)   (alltoallv alike: any counts)
    gather(t, mine, out, offsets, root, ws)       root's out (None elsewhere)
    scatter(t, x, mine, offsets, root, ws)        root's x (None elsewhere) into mine
    scan(t, buf, op, ws), exscan(t, buf, op, ws)  in place
t is the transport, op a combine op ("sum", "prod", "max", "min"), ws the Workspace.
"""
from .. import tuning
from . import alltoall, gather, hierarchical, native, recursive, ring, scan, shm, tree
from .common import nominal_nbytes

NATIVE = "mpi"
# Offered only where the transport knows which ranks share a node (`ranks_per_node`).
NEEDS_NODES = {"hierarchical"}
# Offered only where all the transport's ranks share a segment (`shm.segment_of`), and
# never for device buffers (Communicator.algorithms(..., device=True)): the algorithms the
# cost model prices as running through the segment.
NEEDS_SEGMENT = {name for _, name in tuning.SHARED_MEMORY}
# Where a collective's "mpi" algorithm calls a transport method of another name.
NATIVE_METHOD = {"alltoall": "alltoallv"}


def _chunks(t, collective, algorithm, buf):
    """The pipeline chunk count for buf, from the model the transport plans with (a
    transport may fix it with its `pipeline_chunks` capability: bench.explain does, to
    show pipelining)."""
    return t.capabilities.pipeline_chunks or tuning.algorithm_chunks(
        collective, algorithm, nominal_nbytes(t, buf), t.size, tuning.model_for(t))


def _tree_allreduce(t, x, out, op, ws):
    tree.allreduce(t, x, out, op, ws, chunks=_chunks(t, "allreduce", "tree", x))


def _rooted(collective, name, function, arity):
    """A tree/pipeline broadcast or reduce with arity fixed and chunks from the cost model
    (on one rank there is nothing to move, and nothing to plan)."""
    def run(t, buf, *args):
        if t.size == 1:
            return None
        return function(t, buf, *args, arity=arity, chunks=_chunks(t, collective, name, buf))
    run.__doc__ = f"{function.__qualname__} with arity {arity} (see that function)."
    return run


ALGORITHMS = {
    "allreduce": {
        "ring": ring.allreduce,
        "tree": _tree_allreduce,
        "recursive_doubling": recursive.allreduce,
        "rabenseifner": recursive.rabenseifner,
        "hierarchical": hierarchical.allreduce,
        "oneshot": shm.oneshot_allreduce,
        "twoshot": shm.twoshot_allreduce,
        "shm_ring": shm.ring_allreduce,
        NATIVE: native.allreduce,
    },
    "reduce_scatter": {
        "ring": ring.reduce_scatter,
        "recursive_halving": recursive.reduce_scatter,
        "shm": shm.reduce_scatter,
        NATIVE: native.reduce_scatter,
    },
    "allgather": {
        "ring": ring.allgather,
        "recursive_doubling": recursive.allgather,
        "shm": shm.allgather,
        NATIVE: native.allgather,
    },
    "broadcast": {
        "tree": _rooted("broadcast", "tree", tree.broadcast, 2),
        "pipeline": _rooted("broadcast", "pipeline", tree.broadcast, 1),
        "shm": shm.broadcast,
        NATIVE: native.broadcast,
    },
    "reduce": {
        "tree": _rooted("reduce", "tree", tree.reduce, 2),
        "pipeline": _rooted("reduce", "pipeline", tree.reduce, 1),
        "ring": ring.reduce,
        "shm": shm.reduce,
        NATIVE: native.reduce,
    },
    "alltoall": {
        "pairwise": alltoall.pairwise,
        "bruck": alltoall.bruck,
        "linear": alltoall.linear,
        NATIVE: native.alltoall,
    },
    "alltoallv": {
        "pairwise": alltoall.pairwise,
        "linear": alltoall.linear,
        NATIVE: native.alltoall,
    },
    "gather": {
        "tree": gather.gather_tree,
        "linear": gather.gather_linear,
        NATIVE: native.gather,
    },
    "scatter": {
        "tree": gather.scatter_tree,
        "linear": gather.scatter_linear,
        NATIVE: native.scatter,
    },
    "scan": {
        "recursive_doubling": scan.scan,
        NATIVE: native.scan,
    },
    "exscan": {
        "recursive_doubling": scan.exscan,
        NATIVE: native.exscan,
    },
}


# Algorithms that can be bound to one call signature ahead of the call (see `prepare`),
# each with the arguments of the signature it binds beside the transport and x.
PREPARABLE = {("allreduce", "oneshot"): shm.prepare_oneshot,                  # (t, x, combine op)
              ("reduce_scatter", "shm"): shm.prepare_reduce_scatter,          # (t, x, combine op, offsets)
              ("broadcast", "shm"): shm.prepare_broadcast,                    # (t, x, root)
              ("reduce", "shm"): shm.prepare_reduce,                          # (t, x, combine op, root)
              ("allgather", "shm"): shm.prepare_allgather}                    # (t, x)


def prepare(collective, name, transport, x, *args):
    """`name` bound to x's signature (shape, dtype) and the collective's other arguments
    `args` (all-reduce: the combine op; reduce-scatter: the combine op and the block
    offsets; broadcast: root; reduce: the combine op and root; all-gather: none) on
    `transport`: a function run(x, out) doing what ALGORITHMS[collective][name] does for
    such arrays (out: the result array; for broadcast x itself; None on reduce's
    non-roots), or None where the algorithm offers no such form or it does not apply
    (see PREPARABLE)."""
    make = PREPARABLE.get((collective, name))
    return make(transport, x, *args) if make is not None else None


def names(collective, transport):
    """Algorithm names valid for `collective` over `transport` ("mpi" only where it is
    native, "hierarchical" only where the transport knows nodes that divide its ranks,
    the shared-memory ones only where all its ranks share a segment)."""
    has_native = NATIVE_METHOD.get(collective, collective) in transport.capabilities.native
    has_nodes = hierarchical.ranks_per_node(transport) is not None
    has_segment = shm.segment_of(transport) is not None
    return [name for name in ALGORITHMS[collective]
            if (name != NATIVE or has_native) and (name not in NEEDS_NODES or has_nodes)
            and (name not in NEEDS_SEGMENT or has_segment)]
