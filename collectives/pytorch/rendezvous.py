"""torch.distributed's "env://" rendezvous filled in from MPI, so that a script launched
with `mpirun -n 4 python train.py` needs no RANK, WORLD_SIZE, MASTER_ADDR or MASTER_PORT.

Rank and world size are MPI's; rank 0 picks a free TCP port and tells the others its
address through one MPI broadcast. Nothing here imports torch.
"""
import os
import socket

# Set by the MPI launchers we know (MPICH/Hydra, Open MPI, PMIx): their presence means
# this process is one rank of an MPI job, so asking MPI is safe and worth it.
LAUNCHER_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
TORCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_mpi() -> bool:
    """True when an MPI launcher (mpirun/mpiexec) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def environment_from_mpi(comm=None) -> dict:
    """The variables torch's env:// rendezvous reads, from MPI (collective over `comm`,
    default MPI.COMM_WORLD): RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR
    (127.0.0.1 when every rank shares this node, else rank 0's host name) and
    MASTER_PORT (a port that was free on rank 0). Cost: one node split and one broadcast."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD if comm is None else comm
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank, local_size = node.Get_rank(), node.Get_size()
    node.Free()
    where = None
    if comm.Get_rank() == 0:
        host = "127.0.0.1" if local_size == comm.Get_size() else socket.gethostname()
        where = (host, _free_port())
    host, port = comm.bcast(where, root=0)
    return {"RANK": str(comm.Get_rank()), "WORLD_SIZE": str(comm.Get_size()),
            "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(local_size),
            "MASTER_ADDR": host, "MASTER_PORT": str(port)}


def fill_environment(comm=None) -> bool:
    """Set the env:// variables from MPI where they are unset (values already set win).

    Does nothing, and asks MPI nothing, when RANK, WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT are all set already. Returns whether it asked MPI.
    """
    if all(name in os.environ for name in TORCH_VARIABLES):
        return False
    for name, value in environment_from_mpi(comm).items():
        os.environ.setdefault(name, value)
    return True


def _free_port():
    """A TCP port nothing listens on now (the OS picks it; torch's store binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
