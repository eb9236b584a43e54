"""Checks run under a real `mpirun -n N python -m tests.mpi_check` (launched by test_mpi.py).

Every algorithm of every collective against the reference and against algorithm "mpi",
results bitwise equal on all ranks, bad input raising on the rank that passed it, and
debug mode naming the ranks that differ. Prints "mpi_check ok" on rank 0 at the end.
"""
import hashlib

import numpy as np

import collectives as cc
from tests.mpirun import run_or_abort
from tests.reference import DTYPES, assert_matches, make_input


def same_everywhere(comm, array):
    digest = hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()
    return len(set(comm.allgather_object(digest))) == 1


def check_reductions(comm):
    n, r = comm.size, comm.rank
    for dtype in DTYPES:
        for op in ("sum", "prod", "max", "min", "avg"):
            if op == "avg" and np.dtype(dtype).kind != "f":
                continue
            for count in (0, 1, n + 2, 1031):
                inputs = [make_input(q, count, dtype, op) for q in range(n)]
                offsets = cc.partition(count, n)
                mpi_result = comm.allreduce(inputs[r].copy(), op, algorithm="mpi")
                assert_matches(mpi_result, inputs, op, "mpi")
                for name in comm.algorithms("allreduce"):
                    what = f"allreduce {name} {dtype} {op} count={count} n={n}"
                    got = comm.allreduce(inputs[r].copy(), op, algorithm=name)
                    assert_matches(got, inputs, op, what)
                    if dtype not in ("float16", "float32", "float64") or op in ("max", "min"):
                        assert np.array_equal(got, mpi_result), what + " differs from mpi"
                    assert same_everywhere(comm, got), what + " differs across ranks"
                for name in comm.algorithms("reduce_scatter"):
                    got = comm.reduce_scatter(inputs[r], op, algorithm=name)
                    expected = [x[offsets[r]:offsets[r + 1]] for x in inputs]
                    assert_matches(got, expected, op, f"reduce_scatter {name} {dtype} {op}")
                root = count % n
                for name in comm.algorithms("reduce"):
                    got = comm.reduce(inputs[r].copy(), op, root, algorithm=name)
                    if r == root:
                        assert_matches(got, inputs, op, f"reduce {name} {dtype} {op}")
                    else:
                        assert got is None


def check_movement(comm):
    n, r = comm.size, comm.rank
    for count in (0, 1, 7, 50000):
        mine = make_input(r, count, "float32", "sum")
        expected = np.concatenate([make_input(q, count, "float32", "sum") for q in range(n)])
        for name in comm.algorithms("allgather"):
            got = comm.allgather(mine, algorithm=name)
            assert got.tobytes() == expected.tobytes(), f"allgather {name} count={count}"
        for root in range(n):
            for name in comm.algorithms("broadcast"):
                x = make_input(root, count, "float32", "sum") if r == root else np.zeros(count, np.float32)
                comm.broadcast(x, root, algorithm=name)
                assert x.tobytes() == make_input(root, count, "float32", "sum").tobytes(), f"broadcast {name}"


def check_segment_arrays(comm):
    """All-reduce on arrays from comm.empty (read where they lie; one-shot reads large ones
    uncopied), out of place and in place, against the reference, MPI and every rank."""
    from collectives.transport.segment import PAGE, STAGING_SHIFT
    n, r = comm.size, comm.rank
    segment = comm.transport.capabilities.shared_segment
    if segment is not None:        # staging half a page in (on every region a whole number of pages from region 0)
        base = segment.regions[0].ctypes.data
        starts = {(segment.regions[j].ctypes.data + segment.staging_offset(p)) % PAGE
                  for j in range(segment.size) for p in (0, 1)
                  if (segment.regions[j].ctypes.data - base) % PAGE == 0}
        assert starts == {STAGING_SHIFT}, starts
    for count in (1031, 200003):                   # 200003 float32: above one-shot's UNSTAGED_BYTES
        for name in ("oneshot", "twoshot", "shm_ring"):
            if name not in comm.algorithms("allreduce"):
                continue
            for in_place in (False, True):
                x = comm.empty(count, np.float32)
                assert comm.in_segment(x) == (segment is not None)
                for call in range(2):              # the same buffer twice, new values each time
                    inputs = [make_input(q, count, "float32", "sum") * (call + 1) for q in range(n)]
                    mpi_result = comm.allreduce(inputs[r].copy(), algorithm="mpi")
                    x[...] = inputs[r]
                    got = comm.allreduce(x, algorithm=name, out=None if in_place else np.empty_like(x))
                    what = f"allreduce {name} on comm.empty count={count} in_place={in_place} n={n}"
                    assert_matches(got, inputs, "sum", what)
                    assert same_everywhere(comm, got), what + " differs across ranks"
                    if n <= 2:                     # one addition: no order to differ in
                        assert np.array_equal(got, mpi_result), what + " differs from mpi"


def check_bad_input_and_debug(comm):
    try:
        comm.allreduce([1, 2, 3])
    except TypeError as exc:
        assert "numpy.ndarray" in str(exc)
    else:
        raise AssertionError("a list was accepted")
    assert comm.allreduce(np.ones(2))[0] == comm.size     # still usable
    debug = cc.init(debug=True)
    if comm.size > 1:
        try:
            debug.allreduce(np.ones(3 if comm.rank == comm.size - 1 else 4))
        except cc.CollectiveMismatch as exc:
            assert f"ranks [{comm.size - 1}]" in str(exc), str(exc)
        else:
            raise AssertionError("debug mode missed a count mismatch")
    assert debug.allreduce(np.ones(2))[0] == comm.size


def check_split(comm):
    sub = comm.split(comm.rank % 2)
    total = sub.allreduce(np.array([comm.rank], np.int64), algorithm="ring")[0]
    assert total == sum(q for q in range(comm.size) if q % 2 == comm.rank % 2)


def main():
    comm = cc.init()
    check_reductions(comm)
    check_movement(comm)
    check_segment_arrays(comm)
    check_bad_input_and_debug(comm)
    check_split(comm)
    work = comm.allreduce(np.ones(10000), async_op=True)
    assert work.wait()[0] == comm.size
    comm.barrier()
    if comm.rank == 0:
        print("mpi_check ok", comm.size, flush=True)


if __name__ == "__main__":
    run_or_abort(main)
