"""A long random sequence of shared-memory collectives on one communicator, every result
checked bit for bit: the segment's staging halves, sync counters and heap are reused
across calls of every kind, size, dtype and op, with `comm.empty` and ordinary buffers,
in and out of place, some asynchronous and waited for later.

Every rank draws the same sequence from the seed and can rebuild every rank's input, so
it computes the expected result itself: a rank-ordered NumPy reduction, which the
shared-memory algorithms match exactly (one-shot reduces in rank order, two-shot and the
`shm` collectives reduce each block in rank order), or for shm_ring the ring order it
combines each block in.

Under mpirun: `mpirun -n 4 python -m tests.shm_sequence_check SEED STEPS SHM_BYTES`
prints "shm sequence ok N" on rank 0 when no result was wrong; tests/test_shm_local.py
runs `run_sequence` on the in-process transport.
"""
import sys

import numpy as np

import collectives as cc

DTYPES = (np.float32, np.float64, np.float16, np.int32, np.int64, np.int8, np.uint8, np.bool_)
OPS = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum, "avg": np.add}
KINDS = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce")


def rank_input(seed, count, dtype, rank):
    """Rank `rank`'s input of a step: small integers (products stay exact), or normals."""
    draw = np.random.default_rng((seed, rank))
    if np.dtype(dtype).kind == "f":
        return draw.standard_normal(count).astype(dtype)
    return draw.integers(0, 3, count).astype(dtype)


def ops_for(dtype):
    """The ops a step on `dtype` may draw: bool has max/min only; "avg" on 4- and 8-byte
    floats (2-byte floats average in float32, a path of its own)."""
    if dtype == np.bool_:
        return ["max", "min"]
    return ["sum", "prod", "max", "min"] + (["avg"] if dtype in (np.float32, np.float64) else [])


def averaged(result, op, size):
    """The engine's "avg": the sum, then one division by the world size."""
    if op == "avg":
        np.true_divide(result, size, out=result, casting="unsafe")
    return result


def ordered(seed, count, dtype, op, size):
    """x_0 <op> x_1 <op> ... <op> x_{size-1}, in rank order."""
    result = rank_input(seed, count, dtype, 0)
    for rank in range(1, size):
        result = OPS[op](result, rank_input(seed, count, dtype, rank))
    return averaged(result, op, size)


def ring_ordered(seed, count, dtype, op, size, staging_bytes):
    """What shm_ring computes: per round (a staging half of the buffer), block b of the
    round's piece (cc.partition) combined in ring order x_{b+1} <op> x_{b+2} <op> ... <op> x_b."""
    inputs = [rank_input(seed, count, dtype, rank) for rank in range(size)]
    result = np.empty(count, dtype)
    per_round = max(1, staging_bytes // np.dtype(dtype).itemsize)
    for start in range(0, count, per_round):
        stop = min(start + per_round, count)
        blocks = cc.partition(stop - start, size)
        for b in range(size):
            lo, hi = start + blocks[b], start + blocks[b + 1]
            chain = [inputs[(b + 1 + k) % size][lo:hi] for k in range(size)]
            accumulated = chain[0].copy()
            for operand in chain[1:]:
                accumulated = OPS[op](accumulated, operand)
            result[lo:hi] = accumulated
    return averaged(result, op, size)


def counts(draw, staging_elements):
    """Element counts around the edges that matter: tiny, one staging half and several."""
    edges = [1, 2, 3, 7, 64, 1000, staging_elements // 4, staging_elements // 2, staging_elements,
             3 * staging_elements, 5 * staging_elements]
    return max(1, int(draw.choice(edges)) + int(draw.integers(-2, 3)))


def run_sequence(comm, seed, steps, staging_bytes, asynchronous=True):
    """Run `steps` random collectives; returns the list of steps whose result was wrong
    (empty when all were exact), each as a string naming the call."""
    draw = np.random.default_rng(seed)
    wrong, pending, kept = [], [], []
    for step in range(steps):
        kind, dtype = KINDS[draw.integers(len(KINDS))], DTYPES[draw.integers(len(DTYPES))]
        ops = ops_for(dtype)
        op, count = ops[draw.integers(len(ops))], counts(draw, staging_bytes // np.dtype(dtype).itemsize)
        heap, in_place, later = draw.random() < 0.5, draw.random() < 0.4, asynchronous and draw.random() < 0.25
        root, call_seed, keep = int(draw.integers(comm.size)), int(draw.integers(1 << 30)), draw.random() < 0.3
        x = comm.empty(count, dtype) if heap else np.empty(count, dtype)
        x[...] = rank_input(call_seed, count, dtype, comm.rank)
        kept = (kept + [x])[-6:] if keep else kept      # heap offsets differ from call to call
        described = f"step {step}: {kind} of {count} {np.dtype(dtype)} heap={heap}"
        described += f" op={op}" if kind in ("allreduce", "reduce_scatter", "reduce") else ""
        if kind == "allreduce":
            algorithm = ("oneshot", "twoshot", "shm_ring")[draw.integers(3)]
            described += f" in_place={in_place} {algorithm}"
            want = (ring_ordered(call_seed, count, dtype, op, comm.size, staging_bytes) if algorithm == "shm_ring"
                    else ordered(call_seed, count, dtype, op, comm.size))
            out = None if in_place else (comm.empty(count, dtype) if heap else np.empty(count, dtype))
            if later:
                pending.append((comm.allreduce(x, op, algorithm=algorithm, out=out, async_op=True), want,
                                described + " async"))
                continue
            got = comm.allreduce(x, op, algorithm=algorithm, out=out)
        elif kind == "reduce_scatter":
            got = comm.reduce_scatter(x, op, algorithm="shm")
            blocks = cc.partition(count, comm.size)
            want = ordered(call_seed, count, dtype, op, comm.size)[blocks[comm.rank]:blocks[comm.rank + 1]]
        elif kind == "allgather":
            got = comm.allgather(x, algorithm="shm")
            want = np.concatenate([rank_input(call_seed, count, dtype, j) for j in range(comm.size)])
        elif kind == "broadcast":
            got = comm.broadcast(x, root, algorithm="shm")
            want = rank_input(call_seed, count, dtype, root)
        else:
            got = comm.reduce(x, op, root, algorithm="shm")
            if comm.rank != root:
                continue
            want = ordered(call_seed, count, dtype, op, comm.size)
        if got.tobytes() != want.tobytes():
            wrong.append(described)
    for work, want, described in pending:
        if work.wait().tobytes() != want.tobytes():
            wrong.append(described)
    return wrong


def staging_bytes(comm):
    """Bytes of one staging half of comm's segment (which the sizes are drawn around)."""
    return comm.transport.capabilities.shared_segment.staging_bytes


def main(seed, steps, shm_bytes):
    comm = cc.init(shm_bytes=shm_bytes)
    wrong = run_sequence(comm, seed, steps, staging_bytes(comm))
    for described in wrong:
        print(f"rank {comm.rank} WRONG {described}", flush=True)
    total = int(comm.allreduce(np.array([len(wrong)]), algorithm="ring")[0])
    if comm.rank == 0 and total == 0:
        print(f"shm sequence ok {comm.size}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
