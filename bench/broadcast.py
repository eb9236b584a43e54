"""mpirun -n 4 python -m bench.broadcast [-r root, same flags as bench.allreduce]

Broadcast of every algorithm (in place, as our API is); busbw = algbw.
"""
import sys

from bench import mpi_direct
from bench.harness import Collective, main

BROADCAST = Collective(
    name="broadcast",
    bus_factor=lambda n: 1.0,
    count_for=lambda size, n, itemsize: size // itemsize,
    run=lambda comm, x, out, op, root, algorithm, inplace: comm.broadcast(x, root, algorithm=algorithm),
    expected=lambda inputs, op, root, rank: inputs[root].astype("float64"),
    modes=(True,),
    rooted=True,
    baselines=mpi_direct.baseline("broadcast"),
)

if __name__ == "__main__":
    sys.exit(main(BROADCAST))
