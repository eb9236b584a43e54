"""`mpirun -n 2 python -m tests.split_collected_check`: a split communicator with a
shared-memory window that garbage collection frees on one rank only (the other still
holds it) is released without waiting for the other rank: MPI_Win_free would wait for
every rank, so the window is left to MPI_Finalize with a ResourceWarning. Waits never time
out here (timeout=0), so a release that waited would hang the job. Prints on rank 0
"split collected ok"."""
import gc
import warnings

import numpy as np

import collectives as cc
from tests.mpirun import run_or_abort


def main():
    comm = cc.init(timeout=0)
    sub = comm.split(0)
    assert sub.transport.capabilities.shared_segment is not None
    assert sub.allreduce(np.ones(4), algorithm="oneshot")[0] == comm.size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if comm.rank == 0:
            del sub
            gc.collect()
    assert comm.allreduce(np.ones(1))[0] == comm.size      # rank 0 got here without waiting
    if comm.rank == 0:
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert any("collected without free()" in text for text in messages), messages
        print("split collected ok", flush=True)
    # the other ranks keep `sub` to the end: MPI_Finalize releases its window


if __name__ == "__main__":
    run_or_abort(main)
