"""Shared-memory faults and cleanup under a real mpirun:
`mpirun -n 4 python -m tests.shm_cases CASE ALGORITHM`.

Cases: ok (a few all-reduces, normal exit), raise (rank 1 raises after the segment is
made), sleep (rank 0 sleeps past the timeout inside the shared-memory all-reduce), count
(rank 3 passes another count). Every rank first prints "SEGMENT <path>" for each /dev/shm
file its process maps (the test checks they are gone afterwards); a rank that catches an
engine error prints one line "FAULT rank R: ..." and exits non-zero.
"""
import os
import sys
import time

import numpy as np

import collectives as cc


def mapped_shm_files():
    """The /dev/shm files this process maps (MPI's shared windows among them)."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split(None, 5)[5].split()[0] for line in maps
                       if len(line.split(None, 5)) == 6 and "/dev/shm/" in line})


def main(case, algorithm):
    comm = cc.init()
    r = comm.rank
    for path in mapped_shm_files():
        print(f"SEGMENT {path}", flush=True)
    x = np.ones(1 << 16)
    comm.allreduce(x, algorithm=algorithm)
    if case == "raise" and r == 1:
        raise RuntimeError("rank 1 gives up")
    if case == "sleep" and r == 0:
        time.sleep(3 * comm.timeout)
    count = 999 if case == "count" and r == 3 else 1000
    comm.allreduce(np.ones(count), algorithm=algorithm)
    comm.barrier()
    print(f"rank {r}: no fault", flush=True)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:3])
    except (cc.CollectiveTimeout, cc.CollectiveMismatch, cc.TransportError) as exc:
        sys.stdout.write(f"FAULT rank {os.environ.get('PMI_RANK', '?')}: {type(exc).__name__}: {exc}\n")
        sys.stdout.flush()
        os._exit(3)
