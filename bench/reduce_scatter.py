"""mpirun -n 4 python -m bench.reduce_scatter [same flags as bench.allreduce]

Reduce-scatter of every algorithm; size is the input vector, busbw = algbw * (n-1)/n.
Out-of-place only (MPI's in-place form has no counterpart in our API).
"""
import sys

import numpy as np

import collectives as cc
from bench import mpi_direct
from bench.common import reduce_float64
from bench.harness import Collective, main


def _block(n, rank, count):
    offsets = cc.partition(count, n)
    return offsets[rank], offsets[rank + 1]


REDUCE_SCATTER = Collective(
    name="reduce_scatter",
    bus_factor=lambda n: (n - 1) / n,
    count_for=lambda size, n, itemsize: size // itemsize,
    run=lambda comm, x, out, op, root, algorithm, inplace:
        comm.reduce_scatter(x, op, algorithm=algorithm, out=out),
    expected=lambda inputs, op, root, rank:
        reduce_float64(inputs, op)[slice(*_block(len(inputs), rank, inputs[0].size))],
    buffers=lambda x, n, rank, inplace: (x, np.empty_like(x, shape=(np.subtract(*_block(n, rank, x.size)[::-1]),))),
    modes=(False,),
    baselines=mpi_direct.baseline("reduce_scatter"),
)

if __name__ == "__main__":
    sys.exit(main(REDUCE_SCATTER))
