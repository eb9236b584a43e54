"""mpirun -n 4 python -m bench.reduce [-r root, same flags as bench.allreduce]

Reduce to root of every algorithm; busbw = algbw. Only root's result is checked.
"""
import sys

from bench import mpi_direct
from bench.common import reduce_float64
from bench.harness import Collective, main

REDUCE = Collective(
    name="reduce",
    bus_factor=lambda n: 1.0,
    count_for=lambda size, n, itemsize: size // itemsize,
    run=lambda comm, x, out, op, root, algorithm, inplace:
        comm.reduce(x, op, root, algorithm=algorithm, out=out),
    expected=lambda inputs, op, root, rank: reduce_float64(inputs, op) if rank == root else None,
    rooted=True,
    baselines=mpi_direct.baseline("reduce"),
)

if __name__ == "__main__":
    sys.exit(main(REDUCE))
