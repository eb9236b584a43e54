"""Under a real `mpirun -n N python -m tests.lifetime_check CYCLES`: split + all-reduce +
free, CYCLES times (more than the ~2,000 communicators MPICH can hold at once), then the
same with asynchronous work; prints "lifetime ok THREADS" on rank 0, THREADS being the
threads alive at the end (1: every executor thread has ended)."""
import sys
import threading

import numpy as np

import collectives as cc
from tests.mpirun import run_or_abort


def main():
    cycles = int(sys.argv[1])
    comm = cc.init()
    for i in range(cycles):
        with comm.split(comm.rank % 2) as half:
            total = half.allreduce(np.ones(4), algorithm="ring", async_op=i % 100 == 0)
            total = total.wait() if i % 100 == 0 else total
            assert total[0] == half.size
    comm.barrier()
    if comm.rank == 0:
        print("lifetime ok", threading.active_count(), flush=True)


if __name__ == "__main__":
    run_or_abort(main)
