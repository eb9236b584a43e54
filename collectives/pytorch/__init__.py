"""PyTorch backend "collectives": torch.distributed over this engine.

    import collectives.pytorch                    # registers the backend (cpu and cuda)
    import torch.distributed as dist
    dist.init_process_group("collectives")        # under mpirun: no environment to set

Importing this package under an MPI launcher fills in RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT from MPI (see rendezvous.py), so the same script also runs with "gloo" or
"nccl". `init_process_group()` below does the same in one call. The algorithm per
collective comes from `pg_options` (an `Options`, a dict, or one algorithm name) or the
COLLECTIVES_ALGORITHM variable ("ring", or "allreduce=ring,broadcast=tree"); default
"auto". PyTorch's `timeout` becomes the engine's: a stuck collective raises
CollectiveTimeout naming the rank. This package is the only one that imports torch.
"""
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional, Union

import torch.distributed as dist

from .group import ProcessGroup
from .rendezvous import fill_environment, launched_by_mpi
from .work import Work

__all__ = ["BACKEND", "Options", "ProcessGroup", "Work", "init_process_group", "register"]

BACKEND = "collectives"


@dataclass
class Options:
    """pg_options for backend "collectives".

    algorithm: one name used by every collective that has an algorithm of that name
               ("auto" elsewhere), or a dict {collective: name}; None reads
               COLLECTIVES_ALGORITHM, else "auto".
    debug:     check before each collective that all ranks called it alike (None:
               COLLECTIVES_DEBUG).
    """
    algorithm: Union[str, dict, None] = None
    debug: Optional[bool] = None


def options_from(pg_options) -> Options:
    """An Options from what init_process_group/new_group passed as pg_options."""
    if pg_options is None:
        return Options()
    if isinstance(pg_options, Options):
        return pg_options
    if isinstance(pg_options, str):
        return Options(algorithm=pg_options)
    if isinstance(pg_options, dict):
        unknown = set(pg_options) - {"algorithm", "debug"}
        if unknown:
            raise ValueError(f"unknown pg_options {sorted(unknown)} for backend 'collectives': "
                             "valid keys are 'algorithm' and 'debug'")
        return Options(**pg_options)
    raise TypeError(f"pg_options for backend 'collectives' must be collectives.pytorch.Options, "
                    f"a dict or an algorithm name, got {type(pg_options).__name__}")


def algorithms_for(comm, algorithm: Union[str, dict, None]) -> dict:
    """{collective: algorithm} for `comm` from an Options.algorithm value (see Options),
    checked against the algorithms the communicator offers."""
    if algorithm is None:
        algorithm = os.environ.get("COLLECTIVES_ALGORITHM", "").strip() or "auto"
    if isinstance(algorithm, str) and "=" in algorithm:
        algorithm = dict(item.split("=", 1) for item in algorithm.replace(" ", "").split(",") if item)
    if isinstance(algorithm, dict):
        for collective, name in algorithm.items():
            if name != "auto" and name not in comm.algorithms(collective):
                raise ValueError(f"unknown {collective} algorithm {name!r}: valid are 'auto', "
                                 f"{', '.join(map(repr, comm.algorithms(collective)))}")
        return dict(algorithm)
    if algorithm == "auto":
        return {}
    chosen = {c: algorithm for c in _COLLECTIVES if algorithm in _offered(comm, c)}
    if not chosen:
        raise ValueError(f"no collective has an algorithm named {algorithm!r}; e.g. allreduce offers "
                         f"{', '.join(map(repr, comm.algorithms('allreduce')))}")
    return chosen


_COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce", "alltoall",
                "gather", "scatter")


def _offered(comm, collective):
    try:
        return comm.algorithms(collective)
    except ValueError:          # a collective this engine version does not have
        return []


def _mpi_communicator(ranks, rank, size):
    """The mpi4py communicator for a torch group: COMM_WORLD for the default group (whose
    ranks must be MPI's), else a new one over the group's global ranks (created by
    those ranks only, as torch's new_group calls the backend only on members)."""
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    if not ranks:
        if (rank, size) != (world.Get_rank(), world.Get_size()):
            raise RuntimeError(f"backend 'collectives' runs over MPI: torch's rank {rank} of {size} "
                               f"must be MPI's rank {world.Get_rank()} of {world.Get_size()} "
                               "(launch with mpirun, not torchrun)")
        return world
    return world.Create_group(world.Get_group().Incl(list(ranks)))


def _create(backend_options, pg_options):
    """The backend creator torch calls (extended API): a ProcessGroup over a new
    Communicator whose timeout is PyTorch's."""
    import collectives as cc
    options = options_from(pg_options)
    mpi_comm = _mpi_communicator(backend_options.global_ranks_in_group,
                                 backend_options.group_rank, backend_options.group_size)
    timeout = backend_options.timeout
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    comm = cc.init(mpi_comm, timeout=seconds, debug=options.debug)
    return ProcessGroup(comm, algorithms_for(comm, options.algorithm))


def register() -> None:
    """Register backend "collectives" with torch.distributed for CPU and CUDA tensors
    (done on import; calling it again changes nothing)."""
    if BACKEND.upper() not in dist.Backend._plugins:
        dist.Backend.register_backend(BACKEND, _create, extended_api=True, devices=["cpu", "cuda"])


def init_process_group(backend: str = BACKEND, **kwargs) -> None:
    """dist.init_process_group(backend, **kwargs) with rank, world size and the store's
    address taken from MPI where the environment does not give them (collective)."""
    fill_environment()
    dist.init_process_group(backend, **kwargs)


register()
if launched_by_mpi():
    fill_environment()
