"""mpirun -n 4 python -m bench.alltoall [same flags as bench.allreduce]

All-to-all of every algorithm against MPI_Alltoall ("mpi") in one interleaved run. As in
nccl-tests, size is one rank's send buffer (n blocks) and busbw = algbw * (n-1)/n: the
share of the buffer that leaves the rank. Out of place only (our API has no in-place form).
"""
import sys

import numpy as np

import collectives as cc
from bench import mpi_direct
from bench.harness import Collective, main


def expected(inputs, op, root, rank):
    """Block `rank` of every rank's input, in rank order."""
    offsets = cc.partition(inputs[0].size, len(inputs))
    return np.concatenate([x[offsets[rank]:offsets[rank + 1]] for x in inputs]).astype(np.float64)


ALLTOALL = Collective(
    name="alltoall",
    bus_factor=lambda n: (n - 1) / n,
    count_for=lambda size, n, itemsize: max(size // itemsize // n, 1) * n,
    run=lambda comm, x, out, op, root, algorithm, inplace: comm.alltoall(x, algorithm=algorithm, out=out),
    expected=expected,
    modes=(False,),
    baselines=mpi_direct.baseline("alltoall"),
)

if __name__ == "__main__":
    sys.exit(main(ALLTOALL))
