"""The engine in a dozen lines.

    mpirun -n 4 python examples/hello_allreduce.py

Every rank contributes its rank number; every algorithm must give the same sum.
"""
import numpy as np

import collectives as cc

comm = cc.init()
x = np.full(10, float(comm.rank), dtype=np.float32)
for algorithm in comm.algorithms("allreduce"):
    total = comm.allreduce(x, "sum", algorithm=algorithm, out=np.empty_like(x))
    if comm.rank == 0:
        print(f"{algorithm:>18}: {total[:3]} ... (expected {sum(range(comm.size))})")
block = comm.reduce_scatter(np.arange(8, dtype=np.float64))      # this rank's block of the sum
everyone = comm.allgather(np.array([comm.rank]))                 # [0, 1, ..., n-1]
work = comm.allreduce(np.ones(1_000_000), async_op=True)         # runs while we compute
busy = sum(i * i for i in range(100_000))
print(f"rank {comm.rank}: block {block}, gathered {everyone}, async sum {work.wait()[0]}")
