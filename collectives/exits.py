"""Leaving an MPI job: never hang in MPI_Finalize after a fault.

MPI_Finalize waits for every rank. A rank that leaves while others are stuck inside a
collective (it raised, it called sys.exit(0), it skipped a call) would wait there forever
once those others have given up, unless the launcher kills it (plain mpirun does;
`mpirun -disable-auto-cleanup` does not). So `cc.init` registers an exit hook that runs
before MPI_Finalize on every rank of a multi-rank job:

- if the last collective of this rank is unfinished (asynchronous work still in flight)
  or failed because ranks lost each other (timeout, broken message), the rank leaves at
  once, with exit code 1, without MPI_Finalize;
- otherwise it waits at an exit barrier (a nonblocking barrier on a communicator of its
  own) until every rank arrives, then finalizes normally; while it waits it watches the
  job's flight-record folder, and leaves with exit code 1 as soon as another rank's record
  shows a collective that failed or timed out (a rank stuck waiting for this one has given
  up: nobody will come to the barrier).

An uncaught exception already ends its rank at once (transport.mpi.install_abort_on_fault).
"""
import os
import sys
import time

from .flight import failed_between_ranks, read_records

POLL_SECONDS = 0.1
# The Communicators cc.init made (their splits are reached through them), held until the
# process ends: the exit hook needs their flight records even after the program dropped them.
_watched = []
_state = {"installed": False, "comm": None, "flight_dirs": set()}


def watch(communicator, world):
    """Check `communicator` at exit (see the module docstring). `world` is the mpi4py
    communicator cc.init was given; the first call duplicates it for the exit barrier
    and registers the hook (every rank calls cc.init alike, so every rank does)."""
    if world.Get_size() == 1:
        return
    if not _state["installed"]:
        import atexit
        _state["comm"] = world.Dup()
        _state["installed"] = True
        atexit.register(_at_exit)
        _record_uncaught_exceptions()
    _watched.append(communicator)
    _state["flight_dirs"].add(communicator.flight_dir)


def _record_exit(how):
    for communicator in list(_watched):
        communicator.record_exit(how)


def _record_uncaught_exceptions():
    """Before the usual hook (which prints and, in an MPI job, ends the rank), write the
    flight records saying that this rank raised."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            _record_exit(f"raised {exc_type.__name__}: {exc}"[:200])
        finally:
            previous(exc_type, exc, tb)
    hook._collectives_exit = getattr(previous, "_collectives_exit", False)
    sys.excepthook = hook


def _unfinished():
    """Entries of collectives that did not complete, over every watched communicator."""
    return [entry for communicator in list(_watched) for entry in communicator.unfinished()]


def _leave(message):
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(1)


def _at_exit():
    from mpi4py import MPI
    comm = _state["comm"]
    if MPI.Is_finalized() or comm is None:
        return
    rank = comm.Get_rank()
    unfinished = _unfinished()
    if unfinished:
        _record_exit("exited (its program ended)")
        calls = ", ".join(f"#{e['seq']} {e['call']} [{e['state']}]" for e in unfinished[:3])
        _leave(f"rank {rank}: exiting with collectives unfinished or failed ({calls}): leaving without "
               "MPI_Finalize, exit code 1, so that the job ends instead of hanging")
    request = comm.Ibarrier()
    recorded = False
    while not request.Test():
        if not recorded:                 # the others are not all here: say why this rank is not
            _record_exit("exited (its program ended)")
            recorded = True
        faulty = _faulty_ranks(rank)
        if faulty:
            _leave(f"rank {rank}: at exit, waiting for every rank to finish, but rank(s) {faulty} "
                   f"reported a failed collective (flight records in "
                   f"{', '.join(sorted(_state['flight_dirs']))}): leaving without MPI_Finalize, "
                   f"exit code 1")
        time.sleep(POLL_SECONDS)
    if recorded:                         # a normal end after all: leave no files behind
        for communicator in _watched:
            communicator.remove_flight_records()


def _faulty_ranks(rank):
    """Other ranks whose flight records end in a collective that failed or timed out."""
    faulty = set()
    for directory in list(_state["flight_dirs"]):
        for other, record in read_records(directory).items():
            entries = record["entries"]
            if other != rank and entries and failed_between_ranks(entries[-1]):
                faulty.add(other)
    return sorted(faulty)
