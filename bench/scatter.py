"""mpirun -n 4 python -m bench.scatter [-r root, same flags as bench.allreduce]

Scatter from root of every algorithm against MPI_Scatter ("mpi") in one interleaved run.
As in nccl-tests, size is root's buffer (n blocks) and busbw = algbw * (n-1)/n: the share
the root sends. Every rank's block is checked.
"""
import sys

import numpy as np

import collectives as cc
from bench import mpi_direct
from bench.harness import Collective, main


def _buffers(x, n, rank, inplace):
    offsets = cc.partition(x.size, n)
    return x, np.empty_like(x, shape=(offsets[rank + 1] - offsets[rank],))


def expected(inputs, op, root, rank):
    offsets = cc.partition(inputs[root].size, len(inputs))
    return inputs[root][offsets[rank]:offsets[rank + 1]].astype(np.float64)


SCATTER = Collective(
    name="scatter",
    bus_factor=lambda n: (n - 1) / n,
    count_for=lambda size, n, itemsize: max(size // itemsize // n, 1) * n,
    run=lambda comm, x, out, op, root, algorithm, inplace: comm.scatter(x, root, algorithm=algorithm, out=out),
    expected=expected,
    buffers=_buffers,
    modes=(False,),
    rooted=True,
    baselines=mpi_direct.baseline("scatter"),
)

if __name__ == "__main__":
    sys.exit(main(SCATTER))
