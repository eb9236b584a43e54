"""`mpirun -n 4 python -m tests.shm_split_check CYCLES` (optionally with
COLLECTIVES_NODES=2): communicators from split get a shared segment of their own where
their ranks share a (possibly emulated) node, run oneshot/twoshot on it exactly, and hand
it back when freed: CYCLES split + all-reduce + free cycles leave the threads, the open
file descriptors and the mappings of /dev/shm files as they were. Prints on rank 0
"shm split ok THREADS_BEFORE THREADS_AFTER FDS_BEFORE FDS_AFTER SHM_BEFORE SHM_AFTER"."""
import os
import sys
import threading

import numpy as np

import collectives as cc
from tests.mpirun import run_or_abort, shared_mappings
from tests.reference import assert_matches, make_input

SHM = {"oneshot", "twoshot", "shm_ring"}


def counts():
    return threading.active_count(), len(os.listdir("/proc/self/fd")), shared_mappings()


def check_group(sub, world_rank):
    """sub's shared-memory all-reduces are exact and use its own segment."""
    segment = sub.transport.capabilities.shared_segment
    assert segment is not None and segment.size == sub.size, (world_rank, sub.size)
    assert SHM <= set(sub.algorithms("allreduce")), sub.algorithms("allreduce")
    inputs = [make_input(q, 10007, "float32", "sum") for q in range(sub.size)]
    for algorithm in sorted(SHM):
        before = segment.syncs
        got = sub.allreduce(inputs[sub.rank].copy(), algorithm=algorithm)
        assert segment.syncs > before, "the split communicator's segment was not used"
        assert_matches(got, inputs, "sum", f"{algorithm} on a split communicator")


def main():
    cycles = int(sys.argv[1])
    comm = cc.init()
    g = comm.transport.capabilities.ranks_per_node if os.environ.get("COLLECTIVES_NODES") else comm.size
    with comm.split(comm.rank // g) as node:              # one (emulated) node's ranks
        check_group(node, comm.rank)
    if g < comm.size:
        with comm.split(comm.rank % g) as across:          # one rank of every node: no segment
            assert across.transport.capabilities.shared_segment is None
            assert not SHM & set(across.algorithms("allreduce"))
    with comm.split(comm.rank // 2) as tp, comm.split(comm.rank % 2) as dp:    # a 2 x 2 grid
        check_group(tp, comm.rank)                       # {0,1} {2,3}: inside a node
        if g == comm.size:
            check_group(dp, comm.rank)                   # {0,2} {1,3}: one node too
        else:
            assert dp.transport.capabilities.shared_segment is None
    duplicate = comm.transport.split(0, comm.rank, segment=False)   # what send/recv run on
    assert duplicate.capabilities.shared_segment is None
    duplicate.free()
    comm.barrier()
    before = counts()
    for i in range(cycles):
        with comm.split(comm.rank // g) as sub:
            total = sub.allreduce(np.ones(64), algorithm="oneshot" if i % 2 else "twoshot")
            assert total[0] == sub.size
    comm.barrier()
    after = counts()
    if comm.rank == 0:
        print("shm split ok", *before, *after, flush=True)


if __name__ == "__main__":
    run_or_abort(main)
