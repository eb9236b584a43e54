"""mpirun -n 4 python -m bench.allgather [same flags as bench.allreduce]

All-gather of every algorithm; size is the gathered output, busbw = algbw * (n-1)/n.
In place means x is this rank's block of the output, as in nccl-tests.
"""
import sys

import numpy as np

from bench import mpi_direct
from bench.harness import Collective, main


def _buffers(x, n, rank, inplace):
    out = np.empty_like(x, shape=(n * x.size,))
    if inplace:
        own = out[rank * x.size:(rank + 1) * x.size]
        own[...] = x
        return own, out
    return x, out


ALLGATHER = Collective(
    name="allgather",
    bus_factor=lambda n: (n - 1) / n,
    count_for=lambda size, n, itemsize: max(size // itemsize // n, 1),
    run=lambda comm, x, out, op, root, algorithm, inplace: comm.allgather(x, algorithm=algorithm, out=out),
    expected=lambda inputs, op, root, rank: np.concatenate(inputs).astype(np.float64),
    buffers=_buffers,
    baselines=mpi_direct.baseline("allgather"),
)

if __name__ == "__main__":
    sys.exit(main(ALLGATHER))
