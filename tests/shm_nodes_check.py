"""`COLLECTIVES_NODES=2 mpirun -n 4 python -m tests.shm_nodes_check`: emulated nodes, each
with its own segment; the hierarchical all-reduce runs shared memory inside them and MPI
between them, and matches MPI's own result. Prints "shm nodes ok N" on rank 0."""
import numpy as np

import collectives as cc
from tests.mpirun import run_or_abort
from tests.reference import assert_matches, make_input


def main():
    comm = cc.init()
    n, r = comm.size, comm.rank
    segment = comm.transport.capabilities.shared_segment
    g = comm.transport.capabilities.ranks_per_node
    names = comm.algorithms("allreduce")
    assert segment.size == g < n and "hierarchical" in names and "oneshot" not in names, (names, g)
    for dtype in ("float32", "int64"):
        for count in (0, 1, 7, 100003):
            inputs = [make_input(q, count, dtype, "sum") for q in range(n)]
            before = segment.syncs
            got = comm.allreduce(inputs[r].copy(), algorithm="hierarchical")
            assert count == 0 or segment.syncs > before, "the node's segment was not used"
            assert_matches(got, inputs, "sum", f"hierarchical {dtype} {count}")
            mpi = comm.allreduce(inputs[r].copy(), algorithm="mpi")
            if dtype == "int64":
                assert np.array_equal(got, mpi)
            digests = comm.allgather_object(got.tobytes())
            assert all(d == digests[0] for d in digests), "ranks differ"
    comm.barrier()
    if r == 0:
        print(f"shm nodes ok {n}", flush=True)


if __name__ == "__main__":
    run_or_abort(main)
