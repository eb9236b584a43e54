"""Under `mpirun -n N python -m tests.mpi_collset_check` (launched by test_collset_mpi.py):
all-to-all(v), gather, scatter, scan/exscan, reduce-scatter with counts and send/recv,
every algorithm against MPI's own result ("mpi") and the reference. Prints
"collset ok N" on rank 0 at the end."""
import numpy as np

import collectives as cc
from tests.mpirun import run_or_abort
from tests.reference import NEW_DTYPE_OPS, assert_matches, make_input


def check_alltoall(comm):
    n, r = comm.size, comm.rank
    for count in (0, 1, n + 3, 4 * n, 20001):
        x = make_input(r, count, "float32", "sum")
        expected = comm.alltoall(x, algorithm="mpi")
        for name in comm.algorithms("alltoall"):
            got = comm.alltoall(x, algorithm=name)
            assert got.tobytes() == expected.tobytes(), f"alltoall {name} count={count}"
    send = [(r + 2 * j) % 4 for j in range(n)]                 # zeros included
    recv = [(i + 2 * r) % 4 for i in range(n)]
    x = make_input(r, sum(send), "int64", "sum")
    expected = comm.alltoallv(x, send, recv, algorithm="mpi")
    for name in comm.algorithms("alltoallv"):
        assert np.array_equal(comm.alltoallv(x, send, recv, algorithm=name), expected), name


def check_rooted(comm):
    n, r = comm.size, comm.rank
    for count in (0, 5, 3001):
        x = make_input(r, count, "float64", "sum")
        for root in range(n):
            expected = comm.gather(x, root, algorithm="mpi")
            full = make_input(root, count * n + 1, "float64", "sum")
            scattered = comm.scatter(full if r == root else np.empty_like(full), root, algorithm="mpi")
            for name in comm.algorithms("gather"):
                got = comm.gather(x, root, algorithm=name)
                assert (got is None) == (r != root) and (got is None or np.array_equal(got, expected)), name
                got = comm.scatter(full if r == root else np.empty_like(full), root, algorithm=name)
                assert got.tobytes() == scattered.tobytes(), f"scatter {name} root {root}"


def check_prefix_and_counts(comm):
    n, r = comm.size, comm.rank
    for dtype, op in (("int32", "sum"), ("float64", "sum"), ("float32", "max"), ("int64", "prod")):
        inputs = [make_input(q, 257, dtype, op) for q in range(n)]
        for collective in ("scan", "exscan"):
            expected = getattr(comm, collective)(inputs[r].copy(), op, algorithm="mpi")
            got = getattr(comm, collective)(inputs[r].copy(), op)
            upto = r + 1 if collective == "scan" else r
            if upto:
                assert_matches(got, inputs[:upto], op, f"{collective} {dtype} {op}")
                assert_matches(expected, inputs[:upto], op, f"mpi {collective} {dtype} {op}")
                if np.dtype(dtype).kind == "i" or op == "max":
                    assert np.array_equal(got, expected), f"{collective} {dtype} {op} differs from mpi"
    counts = [(2 * i + 1) % 3 for i in range(n)]
    x = make_input(r, sum(counts), "float64", "sum")
    expected = comm.reduce_scatter(x, counts=counts, algorithm="mpi")
    for name in comm.algorithms("reduce_scatter"):
        got = comm.reduce_scatter(x, counts=counts, algorithm=name)
        assert got.shape == (counts[r],) and np.allclose(got, expected, rtol=1e-12), name


def check_point_to_point(comm):
    n, r = comm.size, comm.rank
    if n == 1:
        return
    incoming = [comm.recv(np.empty(1000), (r - 1) % n, async_op=True) for _ in range(3)]
    outgoing = [comm.send(np.full(1000, 10.0 * r + k), (r + 1) % n, async_op=True) for k in range(3)]
    total = comm.allreduce(np.ones(3))                 # collectives in between do not interfere
    got = [work.wait() for work in incoming]
    for work in outgoing:
        work.wait()
    q = (r - 1) % n
    assert all(np.all(g == 10.0 * q + k) for k, g in enumerate(got)), "messages out of order"
    assert np.all(total == n)
    comm.barrier(async_op=True).wait()


def check_dtypes(comm):
    """The new dtypes through every reduction algorithm, against MPI's own where MPI has
    the type (bool's max/min are MPI's LOR/LAND), and bitwise equal on all ranks."""
    n, r = comm.size, comm.rank
    for dtype, ops in NEW_DTYPE_OPS.items():
        for op in ops:
            inputs = [make_input(q, 301, dtype, op) for q in range(n)]
            mine = inputs[r]
            if dtype != "bfloat16":
                expected = comm.allreduce(mine.copy(), op, algorithm="mpi")
                assert_matches(expected, inputs, op, f"mpi {dtype} {op}")
            for name in comm.algorithms("allreduce"):
                if dtype == "bfloat16" and name == "mpi":
                    continue
                got = comm.allreduce(mine.copy(), op, algorithm=name)
                what = f"allreduce {name} {dtype} {op}"
                assert_matches(got, inputs, op, what)
                assert same_everywhere(comm, got), what + " differs across ranks"
                exact = dtype in ("bool", "uint16", "uint32", "uint64") or op in ("max", "min")
                if exact and dtype != "bfloat16":
                    assert got.tobytes() == expected.tobytes(), what + " differs from mpi"
            if op != "avg":
                got = comm.scan(mine.copy(), op)
                assert_matches(got, inputs[:r + 1], op, f"scan {dtype} {op}")
    if NEW_DTYPE_OPS.get("bfloat16"):       # refused before the call starts: no failed call recorded
        try:
            comm.allreduce(np.ones(3, "bfloat16"), algorithm="mpi")
        except TypeError as error:
            assert "algorithm 'mpi' cannot reduce bfloat16" in str(error), error
        else:
            raise AssertionError("'mpi' accepted bfloat16")


def same_everywhere(comm, array):
    return len(set(comm.transport.allgather_object(array.tobytes()))) == 1


def main():
    comm = cc.init()
    check_alltoall(comm)
    check_rooted(comm)
    check_prefix_and_counts(comm)
    check_point_to_point(comm)
    check_dtypes(comm)
    if comm.rank == 0:
        print("collset ok", comm.size, flush=True)


if __name__ == "__main__":
    run_or_abort(main)
