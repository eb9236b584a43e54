"""Under a real `mpirun -n N python -m tests.lifetime_check CYCLES`: split + all-reduce +
free, CYCLES times (more than the ~2,000 communicators MPICH can hold at once; each split
also gets a shared-memory window of its own), then the same with asynchronous work;
prints "lifetime ok THREADS" on rank 0, THREADS being the threads alive at the end (1:
every executor thread has ended), and raises if the open file descriptors or the mappings
of /dev/shm files grew."""
import os
import sys
import threading

import numpy as np

import collectives as cc
from tests.mpirun import run_or_abort, shared_mappings


def main():
    cycles = int(sys.argv[1])
    comm = cc.init()
    files = len(os.listdir("/proc/self/fd")), shared_mappings()
    for i in range(cycles):
        with comm.split(comm.rank % 2) as half:
            total = half.allreduce(np.ones(4), algorithm="ring", async_op=i % 100 == 0)
            total = total.wait() if i % 100 == 0 else total
            assert total[0] == half.size
    comm.barrier()
    now = len(os.listdir("/proc/self/fd")), shared_mappings()
    assert now <= files, f"rank {comm.rank}: (file descriptors, /dev/shm files) went from {files} to {now}"
    if comm.rank == 0:
        print("lifetime ok", threading.active_count(), flush=True)


if __name__ == "__main__":
    run_or_abort(main)
