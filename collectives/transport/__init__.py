"""Point-to-point transports: the only thing the algorithms talk to.

A transport is one rank's endpoint. Every transport offers the same small interface:

    rank, size                       this endpoint's rank and the group size
    sendrecv(sendbuf, dest, recvbuf, source)   send and receive at once (either side may be None)
    isend(buf, dest) / irecv(buf, source) -> request with wait()
    waitall(requests)
    barrier()
    allgather_object(obj) -> list    small control-plane exchange (argument checks, split)
    split(color, key) -> transport   the ranks that passed the same color, ordered by (key, rank)

Buffers are 1-D contiguous arrays (views of the user's data or of a workspace). Messages
between one pair of ranks are matched in the order they were posted, as in MPI; there are
no tags because collectives on one communicator run in the same order on every rank.

A transport may also offer `native_<collective>` methods: the library's own collective
(MPI's), which the "mpi" algorithm calls. The in-process transport has none.
"""
from .local import LocalTransport, run_threads  # noqa: F401
