"""python -m bench.percall [-n 5000] [-r 5] [-a auto]

The fixed cost of one call: comm.allreduce of 8 bytes on ONE rank (no peer to wait for:
what is left is argument checks, the algorithm choice, the flight recorder and the call
bookkeeping), beside MPI_Allreduce of the same 8 bytes through mpi4py, in one process.
Prints the best of `-r` repetitions of `-n` calls each, in microseconds per call.
"""
import argparse
import sys
import time

import numpy as np


def best_of(call, calls, repeats):
    """The smallest mean time per call over `repeats` loops of `calls` calls (seconds)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m bench.percall", description=__doc__.split("\n\n")[1])
    parser.add_argument("-n", "--calls", type=int, default=5000)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("-a", "--algorithm", default="auto")
    args = parser.parse_args(argv)
    from mpi4py import MPI

    import collectives as cc
    comm = cc.init(MPI.COMM_SELF)
    x = np.ones(2, np.float32)
    ours = best_of(lambda: comm.allreduce(x, algorithm=args.algorithm), args.calls, args.repeats)
    raw = best_of(lambda: MPI.COMM_SELF.Allreduce(MPI.IN_PLACE, x), args.calls, args.repeats)
    print(f"# comm.allreduce 8 B, 1 rank, algorithm {args.algorithm}: {ours * 1e6:.2f} us per call; "
          f"MPI_Allreduce (mpi4py): {raw * 1e6:.2f} us; ratio {ours / raw:.1f}x", file=out)
    comm.free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
