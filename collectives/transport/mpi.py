"""The MPI transport: one process per rank, bytes moved by mpi4py point-to-point calls.

Buffers are passed to MPI as raw bytes (`[array, MPI.BYTE]`), so every dtype, float16
included, travels the same way; the reductions are ours. The `native_*` methods are MPI's
own collectives, the baseline behind algorithm "mpi".
"""
from mpi4py import MPI

_MPI_OPS = {"sum": MPI.SUM, "prod": MPI.PROD, "max": MPI.MAX, "min": MPI.MIN}


class MPITransport:
    """One rank's endpoint over an mpi4py communicator (see collectives.transport)."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    # -- point to point ----------------------------------------------------------------
    def sendrecv(self, sendbuf, dest, recvbuf, source):
        """Send `sendbuf` to `dest` and receive `recvbuf` from `source` (either may be None)."""
        if sendbuf is None:
            self.comm.Recv([recvbuf, MPI.BYTE], source)
        elif recvbuf is None:
            self.comm.Send([sendbuf, MPI.BYTE], dest)
        else:
            self.comm.Sendrecv([sendbuf, MPI.BYTE], dest, 0, [recvbuf, MPI.BYTE], source, 0)

    def isend(self, buf, dest):
        """Start sending `buf` to `dest`; returns an MPI request (wait() completes it)."""
        return self.comm.Isend([buf, MPI.BYTE], dest)

    def irecv(self, buf, source):
        """Post a receive of `buf` from `source`; returns an MPI request."""
        return self.comm.Irecv([buf, MPI.BYTE], source)

    @staticmethod
    def waitall(requests):
        """Wait for every request in `requests`."""
        MPI.Request.Waitall(requests)

    # -- control plane -------------------------------------------------------------------
    def allgather_object(self, obj):
        """Every rank's `obj` (pickled), in rank order."""
        return self.comm.allgather(obj)

    def barrier(self):
        """MPI_Barrier."""
        self.comm.Barrier()

    def split(self, color, key=0):
        """A transport over the ranks with the same `color` (None: this rank joins none)."""
        sub = self.comm.Split(MPI.UNDEFINED if color is None else color, key)
        return None if sub == MPI.COMM_NULL else MPITransport(sub)

    # -- MPI's own collectives (algorithm "mpi") -----------------------------------------
    def native_allreduce(self, x, out, op):
        self.comm.Allreduce(MPI.IN_PLACE if x is out else x, out, _MPI_OPS[op])

    def native_reduce_scatter(self, buf, op, counts, out):
        self.comm.Reduce_scatter(buf, out, counts, _MPI_OPS[op])

    def native_allgather(self, buf):
        self.comm.Allgather(MPI.IN_PLACE, buf)

    def native_broadcast(self, buf, root):
        self.comm.Bcast(buf, root)

    def native_reduce(self, buf, op, root):
        if self.rank == root:
            self.comm.Reduce(MPI.IN_PLACE, buf, _MPI_OPS[op], root)
        else:
            self.comm.Reduce(buf, None, _MPI_OPS[op], root)
