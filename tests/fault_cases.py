"""Faults under a real mpirun: `mpirun -n 4 python -m tests.fault_cases CASE`.

Cases: skip (rank 1 skips a collective), order (ranks 2, 3 call two collectives in the
other order), count (rank 3 passes another count; `count-debug` the same in debug mode),
sleep (rank 0 sleeps past the timeout), raise (rank 1 raises and exits), kill (rank 1 is
SIGKILLed mid-collective), exit0 (rank 1 calls sys.exit(0) while the others enter an
all-reduce; `exit0-quiet` the same, the others catching their error and ending normally),
and, with debug mode off, op (rank 1 passes op="max"), dtype (rank 2 passes int32 where
the others pass float32), root (rank 3 broadcasts from root 1, the others from 0). Run with a short
COLLECTIVES_TIMEOUT; every surviving rank prints one line starting with "FAULT rank R:"
and exits non-zero.
"""
import os
import signal
import sys
import time

import numpy as np

import collectives as cc


def main(case):
    comm = cc.init(debug=case.endswith("-debug"))
    r = comm.rank
    x = np.ones(1000)
    comm.allreduce(x, algorithm="ring")                      # #1: everyone, fine
    if case == "skip":
        if r != 1:
            comm.allreduce(x, algorithm="ring")              # rank 1 skips #2
    elif case == "order":     # message-passing algorithms (shared-memory flags name the calls at once)
        calls = [lambda: comm.allreduce(np.ones(1000), algorithm="ring"),
                 lambda: comm.broadcast(np.ones(1000), algorithm="tree")]
        for call in (calls if r < 2 else calls[::-1]):
            call()
    elif case.startswith("count"):
        comm.allreduce(np.ones(999 if r == 3 else 1000), algorithm="ring")
    elif case == "sleep":
        if r == 0:
            time.sleep(3 * comm.timeout)
        comm.allreduce(x, algorithm="ring")
    elif case == "raise":
        if r == 1:
            raise RuntimeError("rank 1 gives up")
        comm.allreduce(x, algorithm="ring")
    elif case == "kill":
        if r == 1:     # the others are inside the all-reduce, waiting for rank 1, when it dies
            print(f"rank 1 is pid {os.getpid()}", flush=True)
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)
        comm.allreduce(np.ones(1 << 20), algorithm="ring")
    elif case.startswith("exit0"):
        if r == 1:
            sys.exit(0)                  # the others are about to wait for rank 1
        try:
            comm.allreduce(x, algorithm="ring")
        except cc.CollectiveTimeout as exc:
            if case == "exit0-quiet":    # caught and ignored: the exit hook still ends the rank
                print(f"rank {r} caught {type(exc).__name__}", flush=True)
                return
            raise
    elif case == "op":
        comm.allreduce(np.ones(4, np.float32), "max" if r == 1 else "sum", algorithm="ring")
    elif case == "dtype":
        comm.allreduce(np.ones(4, np.int32 if r == 2 else np.float32), algorithm="ring")
    elif case == "root":
        comm.broadcast(np.ones(1000), root=1 if r == 3 else 0, algorithm="tree")
    else:
        raise SystemExit(f"unknown case {case}")
    comm.barrier()
    print(f"rank {r}: no fault", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except (cc.CollectiveTimeout, cc.CollectiveMismatch, cc.TransportError) as exc:  # report, then end
        # one write per report, so that the ranks' reports do not interleave mid-line
        sys.stdout.write(f"FAULT rank {os.environ.get('PMI_RANK', '?')}: {type(exc).__name__}: {exc}\n")
        sys.stdout.flush()
        os._exit(3)
