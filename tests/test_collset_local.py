"""All-to-all(v), gather, scatter, scan/exscan, send/recv, reduce-scatter with counts and
the asynchronous barrier: every algorithm on the in-process transport, 1-16 ranks,
awkward counts and empty blocks, against a NumPy reference."""
import numpy as np
import pytest

import collectives as cc
from tests.reference import assert_matches, make_input

SIZES = [1, 2, 3, 4, 5, 7, 8, 16]
COUNTS = [0, 1, 5, 16, 103]


def algorithms(collective):
    return cc.run_threads(1, lambda comm: comm.algorithms(collective))[0]


def run(size, fn, **kwargs):
    return cc.run_threads(size, fn, timeout=20, **kwargs)


def blocks(array, size):
    offsets = cc.partition(array.size, size)
    return [array.reshape(-1)[offsets[i]:offsets[i + 1]] for i in range(size)]


def test_new_collectives_are_listed_with_their_algorithms():
    assert algorithms("alltoall") == ["pairwise", "bruck", "linear"]
    assert algorithms("alltoallv") == ["pairwise", "linear"]
    assert algorithms("gather") == algorithms("scatter") == ["tree", "linear"]
    assert algorithms("scan") == algorithms("exscan") == ["recursive_doubling"]


@pytest.mark.parametrize("algorithm", algorithms("alltoall"))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("count", COUNTS)
def test_alltoall_delivers_block_j_of_rank_i_as_block_i_on_rank_j(algorithm, size, count):
    inputs = [make_input(r, count, "float32", "sum") for r in range(size)]
    results = run(size, lambda comm: comm.alltoall(inputs[comm.rank], algorithm=algorithm))
    for r, result in enumerate(results):
        expected = np.concatenate([blocks(x, size)[r] for x in inputs])
        assert result.tobytes() == expected.tobytes(), f"{algorithm} n={size} count={count} rank {r}"
        assert result.shape == (inputs[r].shape if count % size == 0 else expected.shape)


@pytest.mark.parametrize("algorithm", algorithms("alltoall"))
def test_alltoall_keeps_the_shape_and_writes_into_out(algorithm):
    inputs = [np.arange(24, dtype=np.int64).reshape(4, 6) + 100 * r for r in range(4)]

    def body(comm):
        out = np.empty((4, 6), np.int64)
        got = comm.alltoall(inputs[comm.rank], algorithm=algorithm, out=out)
        assert got is out
        return out
    for r, result in enumerate(run(4, body)):
        assert np.array_equal(result, np.stack([x[r] for x in inputs]))


def random_counts(size, seed):
    """counts[i][j]: elements rank i sends to rank j, zeros included."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, (size, size))
    counts[rng.random((size, size)) < 0.25] = 0
    return counts.tolist()


@pytest.mark.parametrize("algorithm", algorithms("alltoallv"))
@pytest.mark.parametrize("size", SIZES)
def test_alltoallv_with_uneven_and_empty_counts(algorithm, size):
    counts = random_counts(size, size)
    inputs = [make_input(r, sum(counts[r]), "float64", "sum") for r in range(size)]

    def body(comm):
        r = comm.rank
        return comm.alltoallv(inputs[r], counts[r], [counts[i][r] for i in range(size)],
                              algorithm=algorithm)
    for r, result in enumerate(run(size, body)):
        pieces = []
        for i in range(size):
            start = sum(counts[i][:r])
            pieces.append(inputs[i][start:start + counts[i][r]])
        assert result.tobytes() == np.concatenate(pieces).tobytes(), f"{algorithm} n={size} rank {r}"


@pytest.mark.parametrize("algorithm", algorithms("gather"))
@pytest.mark.parametrize("size", SIZES)
def test_gather_to_every_root(algorithm, size):
    for count in (0, 3):
        inputs = [make_input(r, count, "int32", "sum").reshape(count, 1) for r in range(size)]

        def body(comm):
            return [comm.gather(inputs[comm.rank], root, algorithm=algorithm) for root in range(size)]
        for r, results in enumerate(run(size, body)):
            for root, result in enumerate(results):
                if r == root:
                    assert np.array_equal(result, np.concatenate(inputs)), f"{algorithm} root {root}"
                else:
                    assert result is None


@pytest.mark.parametrize("algorithm", algorithms("scatter"))
@pytest.mark.parametrize("size", SIZES)
def test_scatter_from_every_root(algorithm, size):
    for count in (0, 2, 17):
        data = [make_input(root, count, "float16", "sum") for root in range(size)]

        def body(comm):
            return [comm.scatter(data[root] if comm.rank == root else np.empty(count, np.float16),
                                 root, algorithm=algorithm) for root in range(size)]
        for r, results in enumerate(run(size, body)):
            for root, result in enumerate(results):
                assert result.tobytes() == blocks(data[root], size)[r].tobytes(), \
                    f"{algorithm} n={size} count={count} root {root} rank {r}"


@pytest.mark.parametrize("collective", ["scan", "exscan"])
@pytest.mark.parametrize("op, dtype", [("sum", "float64"), ("prod", "float32"), ("max", "int16"),
                                       ("min", "float16"), ("sum", "int64")])
@pytest.mark.parametrize("size", SIZES)
def test_scan_and_exscan_match_prefix_reductions(collective, op, dtype, size):
    inputs = [make_input(r, 11, dtype, op) for r in range(size)]
    results = run(size, lambda comm: getattr(comm, collective)(inputs[comm.rank].copy(), op))
    for r, result in enumerate(results):
        if collective == "exscan" and r == 0:
            identity = {"sum": 0, "prod": 1}.get(op)
            if identity is None:
                identity = (np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype))
                identity = identity.min if op == "max" else identity.max
                if np.dtype(dtype).kind == "f":
                    identity = -np.inf if op == "max" else np.inf
            assert np.all(result == identity), f"exscan rank 0 {op}: {result}"
            continue
        upto = r + 1 if collective == "scan" else r
        assert_matches(result, inputs[:upto], op, f"{collective} {op} {dtype} n={size} rank {r}")


def test_scan_out_of_place_keeps_the_input():
    def body(comm):
        x = np.full(3, comm.rank + 1.0)
        out = np.empty(3)
        comm.scan(x, out=out)
        return x, out
    for r, (x, out) in enumerate(run(4, body)):
        assert np.all(x == r + 1) and np.all(out == sum(range(1, r + 2)))


@pytest.mark.parametrize("algorithm", algorithms("reduce_scatter"))
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_reduce_scatter_with_per_rank_counts(algorithm, size):
    counts = [(3 * i + 1) % 4 for i in range(size)]        # zeros included
    inputs = [make_input(r, sum(counts), "float64", "sum") for r in range(size)]
    results = run(size, lambda comm: comm.reduce_scatter(inputs[comm.rank], counts=counts,
                                                         algorithm=algorithm))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for r, result in enumerate(results):
        expected = [x[offsets[r]:offsets[r + 1]] for x in inputs]
        assert result.shape == (counts[r],)
        assert_matches(result, expected, "sum", f"{algorithm} n={size} rank {r}")


def test_send_recv_match_in_order_and_do_not_mix_with_collectives():
    def body(comm):
        if comm.rank == 0:
            first = comm.send(np.arange(4.0), 1, async_op=True)
            second = comm.send(np.arange(4.0) + 10, 1, async_op=True)
            total = comm.allreduce(np.ones(4))
            first.wait()
            second.wait()
            return total
        if comm.rank == 1:
            total = comm.allreduce(np.ones(4))          # before the receives: no mixing
            a = comm.recv(np.empty(4), 0)
            b = comm.recv(np.empty(4), 0, async_op=True).wait()
            return total, a, b
        return comm.allreduce(np.ones(4))
    results = run(3, body)
    total, a, b = results[1]
    assert np.all(total == 3) and np.array_equal(a, np.arange(4.0)) and np.array_equal(b, np.arange(4.0) + 10)


def test_ring_of_sends_with_async_handles():
    # the in-process transport completes a send only once the receive is waited for
    # (rendezvous), so the handles are waited for after both sides are posted
    def body(comm):
        n, r = comm.size, comm.rank
        incoming = comm.recv(np.empty(2, np.int64), (r - 1) % n, async_op=True)
        outgoing = comm.send(np.array([r, r * r]), (r + 1) % n, async_op=True)
        got = incoming.wait()
        outgoing.wait()
        return got
    for r, got in enumerate(run(5, body)):
        q = (r - 1) % 5
        assert got.tolist() == [q, q * q]


def test_async_barrier_returns_a_work_in_call_order():
    def body(comm):
        work = comm.barrier(async_op=True)
        total = comm.allreduce(np.ones(2), async_op=True)
        assert work.wait() is None
        return total.wait()
    assert all(np.all(t == 3) for t in run(3, body))


def test_collectives_compose_on_a_split_communicator():
    def body(comm):
        sub = comm.split(comm.rank % 2)
        got = sub.alltoall(np.full(sub.size, comm.rank))
        if sub.rank == 0:
            sub.send(np.array([comm.rank]), sub.size - 1)
        if sub.rank == sub.size - 1:
            return got, sub.recv(np.empty(1, np.int64), 0)
        return got, None
    results = run(5, body)
    assert results[4][0].tolist() == [0, 2, 4] and results[4][1].tolist() == [0]
    assert results[3][1].tolist() == [1]


BAD_CALLS = {
    "alltoallv counts do not add up": (lambda c: c.alltoallv(np.zeros(5), [1] * c.size, [1] * c.size),
                                       ValueError, "add up to 3 but x has 5"),
    "alltoallv negative count": (lambda c: c.alltoallv(np.zeros(1), [2, -1, 0], [1] * c.size),
                                 ValueError, "send_counts[1] must be an integer >= 0, got -1"),
    "alltoallv counts too short": (lambda c: c.alltoallv(np.zeros(2), [1, 1], [1] * c.size),
                                   ValueError, "3 ints"),
    "reduce_scatter counts": (lambda c: c.reduce_scatter(np.zeros(4), counts=[1, 1, 1]),
                              ValueError, "add up to 3 but x has 4"),
    "gather root": (lambda c: c.gather(np.zeros(2), root=3), ValueError, "root"),
    "scatter root": (lambda c: c.scatter(np.zeros(2), root=-1), ValueError, "root"),
    "send to itself": (lambda c: c.send(np.zeros(2), c.rank), ValueError, "itself"),
    "recv out of range": (lambda c: c.recv(np.zeros(2), 7), ValueError, "source must be an integer [0, 3), got 7"),
    "recv read-only": (lambda c: c.recv(_read_only(), (c.rank + 1) % 3), ValueError, "read-only"),
    "scan avg": (lambda c: c.scan(np.zeros(2), "avg"), ValueError, "not 'avg'"),
    "alltoall out shape": (lambda c: c.alltoall(np.zeros(6), out=np.zeros(5)), ValueError, "shape"),
    "unknown alltoall algorithm": (lambda c: c.alltoall(np.zeros(3), algorithm="ring"), ValueError,
                                   "'pairwise', 'bruck'"),
}


def _read_only():
    x = np.zeros(2)
    x.flags.writeable = False
    return x


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_raises_on_the_rank_that_passed_it_before_any_communication(case):
    call, error, words = BAD_CALLS[case]

    def body(comm):
        with pytest.raises(error) as info:
            call(comm)
        assert words in str(info.value), str(info.value)
        return comm.alltoall(np.arange(3.0))          # still usable: nothing was sent
    for result in run(3, body):
        assert result.size == 3


def test_debug_mode_names_alltoallv_counts_that_disagree_on_every_rank():
    def body(comm):
        send = [1, 1, 1]
        recv = [2, 1, 1] if comm.rank == 2 else [1, 1, 1]
        with pytest.raises(cc.CollectiveMismatch) as info:
            comm.alltoallv(np.zeros(3), send, recv)
        comm.alltoallv(np.zeros(3), send, [1, 1, 1])  # still usable
        return str(info.value)
    messages = run(3, body, debug=True)
    assert all(m == messages[0] for m in messages)
    assert "rank 0 sends 1 elements to rank 2, which expects 2" in messages[0]


def test_debug_mode_names_ranks_with_other_reduce_scatter_counts():
    def body(comm):
        counts = [2, 1, 1] if comm.rank == 1 else [1, 2, 1]
        with pytest.raises(cc.CollectiveMismatch) as info:
            comm.reduce_scatter(np.zeros(4), counts=counts)
        return str(info.value)
    assert "ranks [1]" in run(3, body, debug=True)[0]


def test_new_collectives_are_in_the_flight_record_and_time_out_naming_the_call(tmp_path):
    def body(comm):
        comm.alltoall(np.ones(4), algorithm="bruck")
        comm.gather(np.ones(2), 1, algorithm="tree")
        comm.scan(np.ones(2), "max")
        if comm.rank == 2:
            comm.dump_flight_record()
            return comm.flight_record()
        comm.alltoallv(np.ones(3), [1, 1, 1], [1, 1, 1])
    with pytest.raises(cc.CollectiveTimeout) as info:
        cc.run_threads(3, body, timeout=1, flight_dir=str(tmp_path))
    assert "alltoallv(dtype=float64, algorithm=pairwise) #4 did not complete within 1 s" in str(info.value)
    assert "rank 2 never entered #4" in info.value.summary

    record = run(2, lambda comm: (comm.alltoall(np.ones(4), algorithm="bruck"),
                                  comm.scatter(np.ones(4), 1, algorithm="linear"),
                                  comm.flight_record())[-1])[0]
    assert [e["call"] for e in record] == ["alltoall(count=4, dtype=float64, algorithm=bruck)",
                                           "scatter(count=4, dtype=float64, root=1, algorithm=linear)"]


@pytest.mark.parametrize("differs", ["root", "shape", "algorithm"])
def test_debug_mode_names_ranks_that_call_gather_scatter_or_alltoall_differently(differs):
    def body(comm):
        odd = comm.rank == 1
        with pytest.raises(cc.CollectiveMismatch) as info:
            if differs == "root":
                comm.scatter(np.zeros(6), root=2 if odd else 0)
            elif differs == "shape":
                comm.gather(np.zeros((2, 3) if odd else (3, 2)))
            else:
                comm.alltoall(np.zeros(6), algorithm="bruck" if odd else "pairwise")
        return str(info.value)
    messages = run(3, body, debug=True)
    assert all(m == messages[0] for m in messages) and "ranks [1]" in messages[0] and "ranks [0, 2]" in messages[0]
