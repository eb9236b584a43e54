"""Algorithm "mpi": the MPI library's own collectives, the baseline we measure against.

These need a transport with `native_*` methods (the MPI transport); the algorithms of ours
do not.
"""


def allreduce(t, x, out, op, ws):
    """MPI_Allreduce (in place when x is out)."""
    t.native_allreduce(x, out, op)


def reduce_scatter(t, x, out, op, offsets, ws):
    """MPI_Reduce_scatter with the `cc.partition` block counts."""
    counts = [offsets[i + 1] - offsets[i] for i in range(t.size)]
    t.native_reduce_scatter(x, op, counts, out)


def allgather(t, buf, offsets, ws=None):
    """MPI_Allgather in place (block r of buf is this rank's)."""
    t.native_allgather(buf)


def broadcast(t, buf, root, ws=None):
    """MPI_Bcast."""
    t.native_broadcast(buf, root)


def reduce(t, work, op, root, ws):
    """MPI_Reduce into root's `work`."""
    t.native_reduce(work, op, root)
