"""mpirun -n 4 python -m bench.allreduce [-b 8 -e 16M -f 2 -n 20 -w 5 -d float32 -o sum -a all]

All-reduce of every algorithm (ours and MPI's own), nccl-tests style: out-of-place and
in-place time, algbw and busbw = algbw * 2(n-1)/n, and the number of wrong elements.
"""
import sys

from bench.harness import Collective, main, reduce_float64


def _run(comm, x, out, op, root, algorithm, inplace):
    return comm.allreduce(x, op, algorithm=algorithm, out=out)


def _expected(inputs, op, root, rank):
    return reduce_float64(inputs, op)


ALLREDUCE = Collective(
    name="allreduce",
    bus_factor=lambda n: 2 * (n - 1) / n,
    count_for=lambda size, n, itemsize: size // itemsize,
    run=_run,
    expected=_expected,
)

if __name__ == "__main__":
    sys.exit(main(ALLREDUCE))
