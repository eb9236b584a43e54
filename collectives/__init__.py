"""collectives: a from-scratch collective-communication engine.

    import collectives as cc
    comm = cc.init()                      # over MPI.COMM_WORLD (or cc.init(mpi4py_comm))
    comm.allreduce(x, "sum", algorithm="ring")
    comm.reduce_scatter(x), comm.allgather(x), comm.broadcast(x, root), comm.reduce(x, op, root)
    comm.barrier(); comm.split(color, key); comm.algorithms("allreduce")
    cc.partition(count, size)             # block offsets, numpy.array_split convention
    cc.run_threads(n, fn)                 # run fn(comm) on n in-process ranks (tests, teaching)

Algorithms are ours (ring, tree, recursive doubling, Rabenseifner, ...); MPI only moves
bytes, except for algorithm "mpi", MPI's own collective, kept as the baseline.
"""
from typing import Any, Callable, Optional

from . import exits
from .arguments import as_int
from .buffers import select_device
from .communicator import Communicator, check_timeout, debug_from_env, timeout_from_env
from .errors import CollectiveMismatch, CollectiveTimeout, TransportError, TransportTimeout
from .ops import AVG, MAX, MIN, OPS, PROD, SUM
from .partition import partition
from .work import Work

__all__ = ["init", "run_threads", "partition", "Communicator", "Work", "CollectiveMismatch",
           "CollectiveTimeout", "TransportError", "TransportTimeout",
           "SUM", "PROD", "MAX", "MIN", "AVG", "OPS"]

_UNSET = object()


def init(comm: Any = None, *, debug: Optional[bool] = None, timeout: Any = _UNSET, flight_dir: Optional[str] = None,
         shm_bytes: Any = _UNSET, nodes: Optional[int] = None) -> Communicator:
    """A Communicator over an mpi4py communicator (default MPI.COMM_WORLD).

    The communicator is duplicated, so the engine's messages never mix with the caller's.
    debug=True (or COLLECTIVES_DEBUG=1) checks before every collective that all ranks
    called it alike, and raises the same error on every rank if not.
    timeout: seconds a collective may wait on a peer before raising CollectiveTimeout on
    every rank still alive (default COLLECTIVES_TIMEOUT, else 300; 0 or None: forever).
    flight_dir: where flight records go on a timeout (default: a per-job temp folder).
    shm_bytes: bytes per rank of the node's shared segment, through which the shared-memory
    algorithms (oneshot, twoshot) run (default COLLECTIVES_SHM_BYTES, else 64 MiB + 16 KiB; 0: none).
    nodes: emulate that many nodes of consecutive ranks on this machine (default
    COLLECTIVES_NODES, else the real nodes), each with its own segment: the hierarchical
    algorithm then runs shared memory inside them and MPI between them.
    With CuPy and a GPU present, each rank makes GPU (node-local rank mod GPU count)
    current (`comm.device`); CuPy arrays then work in every collective.
    An uncaught exception on any rank of a multi-rank job ends that rank with exit code 1
    right after its traceback, rather than leaving it waiting in MPI_Finalize; a rank that
    exits otherwise (sys.exit(0) included) with a collective unfinished or failed, or while
    another rank reports a failed collective, leaves with exit code 1 without finalizing
    (see collectives.exits).
    """
    from mpi4py import MPI

    from .transport.mpi import MPITransport, install_abort_on_fault, unlink_shared_files
    from .transport.segment import check_shm_bytes, emulated_node_size, shm_bytes_from_env
    comm = MPI.COMM_WORLD if comm is None else comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"cc.init takes an mpi4py communicator, got {type(comm).__name__}")
    timeout = timeout_from_env() if timeout is _UNSET else check_timeout(timeout)
    shm_bytes = shm_bytes_from_env() if shm_bytes is _UNSET else check_shm_bytes(shm_bytes)
    g = emulated_node_size(comm.Get_size(), nodes)        # every argument checked before the hook
    install_abort_on_fault()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)          # ranks on this node pick GPUs in turn
    unlink_shared_files(node)                # nothing in /dev/shm outlives the job, however it ends
    device = select_device(node.Get_rank())
    layout = comm.allgather((node.Get_size(), comm.Get_rank() - node.Get_rank()))
    transport = MPITransport(comm.Dup(), ranks_per_node=g or _equal_consecutive_nodes(layout), shm_bytes=shm_bytes,
                             node_color=None if g is None else comm.Get_rank() // g)
    node.Free()
    communicator = Communicator(transport, timeout=timeout, flight_dir=flight_dir,
                                debug=debug_from_env() if debug is None else debug)
    communicator.device = device
    exits.watch(communicator, comm)
    return communicator


def _equal_consecutive_nodes(layout):
    """Ranks per node when the job spans several nodes of equal size holding consecutive
    ranks (what the "hierarchical" algorithm needs), else None. `layout` holds each rank's
    (node size, first rank of its node)."""
    g = layout[0][0]
    if g == len(layout) or any(size != g or first != rank - rank % g
                               for rank, (size, first) in enumerate(layout)):
        return None
    return g


def run_threads(size: int, fn: Callable[..., Any], *args: Any, debug: bool = False, timeout: Optional[float] = 60.0,
                flight_dir: Optional[str] = None, ranks_per_node: Optional[int] = None, shm_bytes: Any = _UNSET,
                nodes: Optional[int] = None, **kwargs: Any) -> list:
    """Run fn(comm, *args, **kwargs) on `size` ranks in this process, one thread each.

    The ranks share a segment of `shm_bytes` per rank (default COLLECTIVES_SHM_BYTES, else
    64 MiB + 16 KiB; 0: none) for the shared-memory algorithms.

    Returns the results in rank order and re-raises the first rank's exception (a rank's
    own error rather than the errors it caused on others). A collective stuck longer
    than `timeout` seconds raises CollectiveTimeout instead of hanging (None, 0 or inf:
    no limit). When fn ends, each rank's Communicator is freed with every sub-communicator
    still alive (its asynchronous work finished or failed first), so every thread started
    here has ended when run_threads returns. ranks_per_node: the ranks declare nodes of
    that many consecutive ranks (the "hierarchical" algorithm becomes available where it
    divides `size`). nodes: emulate that many nodes of consecutive ranks, each with its own
    segment (as cc.init(nodes=...)); it sets ranks_per_node.
    """
    from .transport.contract import Capabilities
    from .transport.local import run_threads as spawn
    from .transport.segment import check_shm_bytes, emulated_node_size, shm_bytes_from_env
    timeout = check_timeout(timeout)
    size = as_int(size, "size", low=1)
    node_size = emulated_node_size(size, nodes) if nodes is not None else None
    ranks_per_node = node_size or ranks_per_node
    shm_bytes = shm_bytes_from_env() if shm_bytes is _UNSET else check_shm_bytes(shm_bytes)
    return spawn(size, fn, *args, timeout=timeout, shm_bytes=shm_bytes, node_size=node_size,
                 wrap=lambda t: Communicator(t, debug=debug, timeout=timeout, flight_dir=flight_dir),
                 release=Communicator.free, capabilities=Capabilities(ranks_per_node=ranks_per_node),
                 **kwargs)
