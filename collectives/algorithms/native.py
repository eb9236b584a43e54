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


def _counts(offsets):
    return [offsets[i + 1] - offsets[i] for i in range(len(offsets) - 1)]


def alltoall(t, x, out, send_offsets, recv_offsets, ws=None):
    """MPI_Alltoall when every block has one length, else MPI_Alltoallv."""
    send, recv = _counts(send_offsets), _counts(recv_offsets)
    if len(set(send)) == 1 and len(set(recv)) == 1:
        t.native_alltoall(x, out)
        return
    t.native_alltoallv(x, send, out, recv)


def gather(t, mine, out, offsets, root, ws=None):
    """MPI_Gather (MPI_Gatherv for unequal blocks) into root's `out`."""
    t.native_gather(mine, out, _counts(offsets), root)


def scatter(t, x, mine, offsets, root, ws=None):
    """MPI_Scatter (MPI_Scatterv for unequal blocks) of root's `x`."""
    t.native_scatter(x, mine, _counts(offsets), root)


def scan(t, buf, op, ws=None):
    """MPI_Scan in place."""
    t.native_scan(buf, op)


def exscan(t, buf, op, ws=None):
    """MPI_Exscan in place (rank 0's buffer is left for the caller to fill)."""
    t.native_exscan(buf, op)
