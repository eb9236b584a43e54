"""Point-to-point transports: the only thing the algorithms talk to.

The contract every transport and wrapper implements is code: `contract.Transport` (the
required calls: rank, size, sendrecv, isend, irecv, waitall, barrier, allgather_object,
split, set_timeout, begin_call) and `contract.Capabilities` (what a transport offers
beyond them, declared, never probed). docs/ARCHITECTURE.md explains both.

    local.py       one thread per rank, in memory (tests, teaching)
    mpi.py         one process per rank over mpi4py; MPI's own collectives as native_*
    simulated.py   thousands of ranks on a virtual alpha-beta-gamma clock
    wrapper.py     the base of wrappers; staged.py stages GPU buffers; counting.py counts bytes
    waiting.py     the bounded wait; objects.py object exchange over point-to-point

Nothing here imports the layers above (Communicator, algorithms, tracing, simulation).
"""
from .contract import Capabilities, Transport  # noqa: F401
from .local import LocalTransport, run_threads  # noqa: F401
