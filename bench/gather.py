"""mpirun -n 4 python -m bench.gather [-r root, same flags as bench.allreduce]

Gather to root of every algorithm against MPI_Gather ("mpi") in one interleaved run. As
in nccl-tests, size is the gathered buffer at the root (n blocks) and busbw = algbw *
(n-1)/n: the share the root receives. Only root's result is checked.
"""
import sys

import numpy as np

from bench import mpi_direct
from bench.harness import Collective, main


def _buffers(x, n, rank, inplace):
    return x, None


GATHER = Collective(
    name="gather",
    bus_factor=lambda n: (n - 1) / n,
    count_for=lambda size, n, itemsize: max(size // itemsize // n, 1),
    run=lambda comm, x, out, op, root, algorithm, inplace: comm.gather(x, root, algorithm=algorithm),
    expected=lambda inputs, op, root, rank: np.concatenate(inputs).astype(np.float64) if rank == root else None,
    buffers=_buffers,
    modes=(False,),
    rooted=True,
    baselines=mpi_direct.baseline("gather"),
)

if __name__ == "__main__":
    sys.exit(main(GATHER))
