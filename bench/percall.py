"""python -m bench.percall [-n 200] [-r 50] [-a auto]

The fixed cost of one call: comm.allreduce of 8 bytes on ONE rank (no peer to wait for:
what is left is argument checks, the algorithm choice, the flight recorder and the call
bookkeeping), beside MPI_Allreduce of the same 8 bytes through mpi4py, in one process;
then the same for broadcast, allgather, reduce_scatter and reduce of 8 bytes, each beside
MPI's own call. `-a` picks the all-reduce algorithm (the other collectives use it where
they have one of that name, else "auto"). Prints the best of `-r` repetitions of `-n`
calls each, in microseconds per call: many short loops, so that the best one is a loop no
other process interrupted (the machine's load shows in the mean, not in the best).
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


def calls(comm, mpi, algorithm):
    """(collective, algorithm used, our call, MPI's call) on 8-byte buffers at one rank."""
    from mpi4py import MPI
    x, y = np.ones(2, np.float32), np.ones(2, np.float32)

    def pick(collective):
        return algorithm if algorithm in comm.algorithms(collective) else "auto"
    return [("allreduce", pick("allreduce"), lambda a: comm.allreduce(x, algorithm=a),
             lambda: mpi.Allreduce(MPI.IN_PLACE, x)),
            ("broadcast", pick("broadcast"), lambda a: comm.broadcast(x, algorithm=a),
             lambda: mpi.Bcast(x)),
            ("allgather", pick("allgather"), lambda a: comm.allgather(x, algorithm=a, out=y),
             lambda: mpi.Allgather(x, y)),
            ("reduce_scatter", pick("reduce_scatter"), lambda a: comm.reduce_scatter(x, algorithm=a, out=y),
             lambda: mpi.Reduce_scatter_block(x, y)),
            ("reduce", pick("reduce"), lambda a: comm.reduce(x, algorithm=a),
             lambda: mpi.Reduce(MPI.IN_PLACE, x))]


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m bench.percall", description=__doc__.split("\n\n")[1])
    parser.add_argument("-n", "--calls", type=int, default=200)
    parser.add_argument("-r", "--repeats", type=int, default=50)
    parser.add_argument("-a", "--algorithm", default="auto")
    args = parser.parse_args(argv)
    from mpi4py import MPI

    import collectives as cc
    comm = cc.init(MPI.COMM_SELF)
    for collective, algorithm, ours_call, mpi_call in calls(comm, MPI.COMM_SELF, args.algorithm):
        ours = best_of(lambda: ours_call(algorithm), args.calls, args.repeats)
        raw = best_of(mpi_call, args.calls, args.repeats)
        mpi_name = "MPI_" + {"broadcast": "Bcast", "reduce_scatter": "Reduce_scatter_block"}.get(
            collective, collective.capitalize())
        print(f"# comm.{collective} 8 B, 1 rank, algorithm {algorithm}: {ours * 1e6:.2f} us per call; "
              f"{mpi_name} (mpi4py): {raw * 1e6:.2f} us; ratio {ours / raw:.1f}x", file=out)
    comm.free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
