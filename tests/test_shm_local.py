"""The shared segment and the shared-memory algorithms on the in-process transport: rounds
through a small segment, slot reuse without barriers, stalled and mismatched peers.
(Every op, dtype, count and world size 1-16 runs in test_collectives_local.py, which takes
every algorithm comm.algorithms offers.)"""
import gc
import threading
import time
import weakref

import numpy as np
import pytest

import collectives as cc
from collectives.transport.segment import HEADER, Heap, check_shm_bytes
from tests.reference import assert_matches, make_input
from tests.shm_sequence_check import run_sequence, staging_bytes

SHM = ["oneshot", "twoshot", "shm_ring"]


def algorithms(shm_bytes):
    return cc.run_threads(2, lambda comm: comm.algorithms("allreduce"), shm_bytes=shm_bytes)[0]


def test_shared_memory_algorithms_are_offered_only_with_a_segment():
    assert set(SHM) <= set(algorithms(1 << 20))
    assert not set(SHM) & set(algorithms(0))
    assert not set(SHM) & set(algorithms(HEADER))          # too small to stage anything


def test_shm_bytes_reads_counts_and_units_and_refuses_nonsense():
    assert check_shm_bytes("64M") == 64 << 20 and check_shm_bytes(4096) == 4096
    for bad in (-1, "lots", 1.5, True):
        with pytest.raises(ValueError, match="shm_bytes"):
            check_shm_bytes(bad)


@pytest.mark.parametrize("algorithm", SHM)
@pytest.mark.parametrize("size", [1, 2, 3, 5, 16])
def test_buffers_larger_than_the_segment_go_in_rounds(algorithm, size):
    count = 5003                                  # ~5 rounds of a 1 KiB staging half
    inputs = [make_input(r, count, "float64", "sum") for r in range(size)]
    results = cc.run_threads(size, lambda comm: comm.allreduce(inputs[comm.rank].copy(), algorithm=algorithm),
                             shm_bytes=HEADER + 4096)
    for result in results:
        assert_matches(result, inputs, "sum", f"{algorithm} n={size}")
        assert result.tobytes() == results[0].tobytes()


@pytest.mark.parametrize("size", [2, 3, 4])
def test_slots_are_reused_call_after_call_without_a_barrier(size):
    # Ranks run ahead of each other freely; a staging slot overwritten too early would
    # show up as a wrong sum in one of the calls.
    def calls(comm):
        results = []
        for i in range(60):
            x = np.full(257 + i, float(comm.rank * 1000 + i))
            results.append(comm.allreduce(x, algorithm=SHM[i % len(SHM)]))
            if comm.rank == i % size:
                time.sleep(0.001)                 # let the others run ahead
        return results
    per_rank = cc.run_threads(size, calls, shm_bytes=HEADER + 8192)
    for i in range(60):
        expected = sum(r * 1000 + i for r in range(size))
        for results in per_rank:
            assert np.all(results[i] == expected), f"call {i}"


@pytest.mark.parametrize("algorithm", SHM)
def test_a_stalled_peer_times_out_naming_it(algorithm):
    def body(comm):
        if comm.rank == 2:
            time.sleep(1.5)
            return None
        comm.allreduce(np.ones(100), algorithm=algorithm)
    with pytest.raises(cc.CollectiveTimeout) as info:
        cc.run_threads(3, body, timeout=0.5)
    assert info.value.peer == 2
    assert "rank 2" in str(info.value) and "shared memory" in str(info.value)


def test_a_peer_in_another_call_is_named_not_read_from():
    def body(comm):
        count = 99 if comm.rank == 1 else 100
        comm.allreduce(np.ones(count), algorithm="oneshot")
    with pytest.raises(cc.CollectiveMismatch, match="Rank 1 passed count=99 where rank 0 passed count=100"):
        cc.run_threads(3, body, timeout=5)


def test_the_in_process_segment_is_released_with_the_world():
    regions = []

    def body(comm):
        comm.allreduce(np.ones(10), algorithm="oneshot")
        regions.append(weakref.ref(comm.transport.capabilities.shared_segment.regions[comm.rank]))
    cc.run_threads(2, body)
    gc.collect()
    assert len(regions) == 2 and all(ref() is None for ref in regions)
    assert not [t for t in threading.enumerate() if t.name.startswith("rank-")]


def test_heap_ranges_are_reused_and_merge_when_given_back():
    heap = Heap(1024)
    a, b = heap.take(100), heap.take(200)
    assert a == (0, 128) and b == (128, 256)
    assert heap.take(1024) is None
    heap.give(*a)
    heap.give(*b)
    assert heap.free_bytes() == 1024 and heap.take(1024) == (0, 1024)


def test_comm_empty_lives_in_the_segment_and_gives_its_bytes_back():
    def body(comm):
        segment = comm.transport.capabilities.shared_segment
        free = segment.heap.free_bytes()
        a = comm.zeros((3, 5), "float32")
        inside = comm.in_segment(a) and comm.in_segment(a[1:, 2]) and not a.any() and a.dtype == np.float32
        ordinary = not comm.in_segment(np.zeros(4)) and not comm.in_segment(a.copy()) and not comm.in_segment([1])
        del a
        gc.collect()
        return inside, ordinary, segment.heap.free_bytes() == free
    assert cc.run_threads(2, body) == [(True, True, True)] * 2


def test_comm_empty_falls_back_to_ordinary_memory_without_room_or_segment():
    def body(comm):
        big = comm.empty(1 << 20, np.uint8)          # larger than the 8 KiB heap
        return big.shape == (1 << 20,) and not comm.in_segment(big) and comm.empty(0).shape == (0,)
    assert all(cc.run_threads(2, body, shm_bytes=HEADER + 4 * 4096))

    def without_segment(comm):
        a = comm.empty((2, 2))
        return a.shape == (2, 2) and not comm.in_segment(a)
    assert all(cc.run_threads(2, without_segment, shm_bytes=0))
    with pytest.raises(TypeError, match="unsupported dtype"):
        cc.run_threads(1, lambda comm: comm.empty(3, object))


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_collectives_on_segment_arrays_read_them_in_place_and_stay_exact(in_place, size):
    count = 70001
    inputs = [make_input(r, count, "float32", "sum") for r in range(size)]

    def body(comm):
        results = []
        for algorithm in SHM:
            x = comm.empty(count, np.float32)
            for _ in range(3):                        # several calls reuse the same buffer
                x[...] = inputs[comm.rank]
                out = None if in_place else comm.empty(count, np.float32)
                results.append(comm.allreduce(x, algorithm=algorithm, out=out).copy())
                if not in_place:
                    assert np.array_equal(x, inputs[comm.rank])
        return results
    per_rank = cc.run_threads(size, body, shm_bytes=HEADER + (1 << 20))
    for results in per_rank:
        for result in results:
            assert_matches(result, inputs, "sum")
    for i in range(len(per_rank[0])):
        assert all(r[i].tobytes() == per_rank[0][i].tobytes() for r in per_rank)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_shm_reduce_scatter_allgather_broadcast_reduce_go_in_rounds_and_match(size):
    count = 5003                                  # ~5 rounds of a 1 KiB staging half
    inputs = [make_input(r, count, "float64", "sum") for r in range(size)]
    offsets = cc.partition(count, size)

    def body(comm):
        x = inputs[comm.rank]
        block = comm.reduce_scatter(x, algorithm="shm")
        gathered = comm.allgather(x[:count // size].copy(), algorithm="shm")   # equal shapes
        root = size - 1
        broadcast = comm.broadcast(x.copy(), root, algorithm="shm")
        reduced = comm.reduce(x.copy(), "sum", root, algorithm="shm")
        return block, gathered, broadcast, reduced
    results = cc.run_threads(size, body, shm_bytes=HEADER + 4096)
    for r, (block, gathered, broadcast, reduced) in enumerate(results):
        assert_matches(block, [x[offsets[r]:offsets[r + 1]] for x in inputs], "sum", f"reduce_scatter rank {r}")
        assert np.array_equal(gathered, np.concatenate([inputs[j][:count // size] for j in range(size)]))
        assert np.array_equal(broadcast, inputs[size - 1])
        if r == size - 1:
            assert_matches(reduced, inputs, "sum", "reduce")
        else:
            assert reduced is None


def test_shm_reduce_scatter_takes_uneven_counts():
    counts = [5, 0, 17]
    inputs = [make_input(r, sum(counts), "int32", "sum") for r in range(3)]
    results = cc.run_threads(3, lambda comm: comm.reduce_scatter(inputs[comm.rank], algorithm="shm", counts=counts),
                             shm_bytes=HEADER + 256)
    bounds = np.cumsum([0] + counts)
    for r, result in enumerate(results):
        assert np.array_equal(result, sum(x[bounds[r]:bounds[r + 1]] for x in inputs))


@pytest.mark.parametrize("size, nodes", [(4, 2), (6, 3), (8, 2), (6, 6), (5, 1)])
def test_emulated_nodes_run_hierarchical_through_each_node_segment(size, nodes):
    inputs = [make_input(r, 1001, "float32", "sum") for r in range(size)]

    def body(comm):
        segment = comm.transport.capabilities.shared_segment
        before = segment.syncs
        got = comm.allreduce(inputs[comm.rank].copy(), algorithm="hierarchical")
        return got, segment.syncs - before, segment.size, comm.algorithms("allreduce")
    results = cc.run_threads(size, body, nodes=nodes)
    for got, syncs, segment_size, names in results:
        assert_matches(got, inputs, "sum", f"hierarchical n={size} nodes={nodes}")
        assert got.tobytes() == results[0][0].tobytes()
        assert syncs == (2 if size > nodes else 0) and segment_size == size // nodes   # 1 per shm phase
        assert "hierarchical" in names and ("oneshot" in names) == (nodes == 1)


def test_nodes_must_divide_the_ranks():
    with pytest.raises(ValueError, match="nodes must be a positive int dividing the 6 ranks"):
        cc.run_threads(6, lambda comm: None, nodes=4)


def test_a_wait_that_spins_out_falls_back_on_the_bounded_wait(monkeypatch):
    """Peers slower than the quick spin are waited for through the bounded wait."""
    import collectives.transport.segment as segment_module
    import collectives.transport.waiting as waiting
    monkeypatch.setattr(waiting, "QUICK_POLLS", 1)
    bounded = []

    def counted(*args, **kwargs):
        bounded.append(1)
        return waiting.poll_until(*args, **kwargs)
    monkeypatch.setattr(segment_module, "poll_until", counted)

    def body(comm):
        time.sleep(0.05 * comm.rank)
        return comm.allreduce(np.full(3, comm.rank + 1.0), algorithm="oneshot")
    for result in cc.run_threads(3, body, timeout=5):
        assert np.array_equal(result, np.full(3, 6.0))
    assert bounded, "no wait outlasted one quick poll"


def test_staging_all_is_every_rank_staging_view_in_rank_order():
    def body(comm):
        segment = comm.transport.capabilities.shared_segment
        views = segment.staging_all(1, np.dtype(np.float32), 5)
        assert views is segment.staging_all(1, np.dtype(np.float32), 5)
        return [v.__array_interface__["data"][0] == segment.staging(j, 1, np.float32, 5).__array_interface__["data"][0]
                and v.shape == (5,) for j, v in enumerate(views)]
    for same in cc.run_threads(3, body):
        assert same == [True, True, True]


def _rank_in_thread():
    return int(threading.current_thread().name.split("-")[1])


@pytest.mark.parametrize("size", [2, 3, 4])
def test_one_shot_reads_a_large_segment_array_where_it_lies(size, monkeypatch):
    """From UNSTAGED_BYTES up, one-shot publishes a `comm.empty` input uncopied (its
    staging stays untouched) and adds one sync point; ranks that pass ordinary arrays, or
    work in place, still copy theirs in, and every result stays exact and bitwise alike."""
    from collectives.algorithms import shm
    monkeypatch.setattr(shm, "UNSTAGED_BYTES", 1024)
    count = 5003                       # two rounds of a 28 KiB staging half, in a 70 KiB heap
    inputs = [make_input(r, count, "float64", "sum") for r in range(size)]

    def body(comm):
        segment = comm.transport.capabilities.shared_segment
        mode = ("heap", "plain", "heap in place")[comm.rank % 3]
        x = np.array(inputs[comm.rank]) if mode == "plain" else comm.empty(count, np.float64)
        x[...] = inputs[comm.rank]
        for parity in (0, 1):
            segment.staging(comm.rank, parity, np.uint8, segment.staging_bytes)[...] = 7
        before = segment.syncs
        out = x if mode == "heap in place" else np.empty_like(x)
        result = comm.allreduce(x, algorithm="oneshot", out=out).copy()
        untouched = all(np.all(segment.staging(comm.rank, parity, np.uint8, segment.staging_bytes) == 7)
                        for parity in (0, 1))
        return result, segment.syncs - before, untouched, mode
    per_rank = cc.run_threads(size, body, shm_bytes=HEADER + (128 << 10))
    for result, syncs, untouched, mode in per_rank:
        assert_matches(result, inputs, "sum", f"{mode} n={size}")
        assert result.tobytes() == per_rank[0][0].tobytes()
        assert syncs == 3                 # two rounds, then the one that ends the heap reads
        assert untouched == (mode == "heap"), mode


def test_one_shot_returns_only_when_peers_have_read_its_heap_input(monkeypatch):
    """Rank 0 overwrites its input the moment the call returns while rank 1 is slow to
    read it: the last sync point keeps rank 0 in the call until rank 1 has read."""
    from collectives.algorithms import shm
    monkeypatch.setattr(shm, "UNSTAGED_BYTES", 1024)
    reduce_ordered = shm.reduce_ordered

    def slow_on_rank_1(*args, **kwargs):
        if _rank_in_thread() == 1:
            time.sleep(0.1)
        return reduce_ordered(*args, **kwargs)
    monkeypatch.setattr(shm, "reduce_ordered", slow_on_rank_1)

    def body(comm):
        x = comm.empty(10000, np.float64)          # above WAIT_ALL_BYTES
        assert comm.transport.capabilities.shared_segment.offset_in_heap(x) is not None
        x[...] = comm.rank + 1
        result = comm.allreduce(x, algorithm="oneshot", out=np.empty_like(x)).copy()
        x[...] = np.nan                   # the caller reuses its buffer at once
        comm.barrier()
        return result
    for result in cc.run_threads(2, body, shm_bytes=HEADER + (512 << 10)):
        assert np.array_equal(result, np.full(10000, 3.0))


@pytest.mark.parametrize("algorithm", SHM)
@pytest.mark.parametrize("size", [3, 4])
def test_ranks_may_mix_segment_arrays_ordinary_arrays_and_in_place(algorithm, size, monkeypatch):
    """In one call some ranks pass ordinary arrays, some `comm.empty` arrays out of place
    (read where they lie), some `comm.empty` arrays in place (copied in), each in two
    rounds; every rank changes its kind from call to call. Results stay exact and alike."""
    from collectives.algorithms import shm
    monkeypatch.setattr(shm, "UNSTAGED_BYTES", 1024)
    count = 40000                     # 320 KB: two rounds of a 252 KiB half, in a 518 KiB heap
    inputs = [make_input(r, count, "float64", "sum") for r in range(size)]

    def body(comm):
        segment = comm.transport.capabilities.shared_segment
        results = []
        for call in range(4):                     # each rank changes its kind of buffer
            mode = (comm.rank + call) % 3
            x = np.array(inputs[comm.rank]) if mode == 0 else comm.empty(count, np.float64)
            assert (segment.offset_in_heap(x) is not None) == (mode != 0), f"rank {comm.rank} call {call}"
            x[...] = inputs[comm.rank]
            out = x if mode == 2 else np.empty_like(x)
            results.append(comm.allreduce(x, algorithm=algorithm, out=out).copy())
            del x, out                            # the heap range goes back for the next call
        return results
    per_rank = cc.run_threads(size, body, shm_bytes=HEADER + (1 << 20))
    for call in range(4):
        for results in per_rank:
            assert_matches(results[call], inputs, "sum", f"{algorithm} call {call}")
            assert results[call].tobytes() == per_rank[0][call].tobytes()


@pytest.mark.parametrize("shm_bytes", [64 << 20, 10 ** 6 + 3])
def test_staging_halves_start_half_a_page_in_on_every_rank(shm_bytes):
    """Both staging halves at the same offset STAGING_SHIFT into a page (not at a page
    start, where copies to and from NumPy's arrays, 16 bytes into a page, stall), wherever
    the regions start, and heap arrays 64-byte aligned."""
    from collectives.transport.segment import PAGE, STAGING_SHIFT

    def body(comm):
        segment = comm.transport.capabilities.shared_segment
        starts = [(segment.regions[j].ctypes.data + segment.staging_offset(p)) % PAGE
                  for j in range(comm.size) for p in (0, 1)]
        return starts, segment.staging_bytes % PAGE, comm.empty(1000, np.float32).ctypes.data % 64
    for starts, remainder, heap_alignment in cc.run_threads(2, body, shm_bytes=shm_bytes):
        assert starts == [STAGING_SHIFT] * 4
        assert remainder == 0 and heap_alignment == 0


@pytest.mark.parametrize("size", [2, 3, 5])
def test_no_rank_writes_staging_a_slow_peer_still_copies_from(size, monkeypatch):
    """Rank 1 is slow to copy the reduced blocks out, while the others go straight on to
    two-shot (or shm_ring) calls of the same size and of other sizes, and to one-shot: a
    rank that wrote where rank 1 still reads would show up as a wrong result on rank 1."""
    from collectives.algorithms import shm
    gather_blocks = shm._gather_blocks

    def slow_on_rank_1(t, *args):
        if t.rank == 1:
            time.sleep(0.02)
        return gather_blocks(t, *args)
    monkeypatch.setattr(shm, "_gather_blocks", slow_on_rank_1)
    plan = [("twoshot", 1000), ("twoshot", 1000), ("twoshot", 999), ("oneshot", 999), ("twoshot", 999),
            ("twoshot", 9000), ("oneshot", 9000),           # one-shot's round path (above 64 KiB)
            ("twoshot", 9000), ("twoshot", 20000), ("twoshot", 20000),   # 20000 doubles: two rounds
            ("shm_ring", 1000), ("shm_ring", 1000), ("twoshot", 1000), ("shm_ring", 999), ("oneshot", 999),
            ("shm_ring", 40000), ("shm_ring", 40000), ("twoshot", 40000)]                # three rounds

    def body(comm):
        return [comm.allreduce(np.full(count, float(comm.rank + 10 * i)), algorithm=algorithm)
                for i, (algorithm, count) in enumerate(plan)]
    for results in cc.run_threads(size, body, shm_bytes=HEADER + (512 << 10)):   # 124 KiB halves
        for i, (result, (algorithm, count)) in enumerate(zip(results, plan)):
            expected = sum(r + 10 * i for r in range(size))
            assert np.all(result == expected), f"call {i} ({algorithm}, {count})"


@pytest.mark.parametrize("size, seed", [(2, 3), (5, 4), (8, 5)])
def test_a_long_random_sequence_of_shared_memory_calls_is_exact(size, seed):
    # every kind of call back to back on one communicator and a 64 KiB segment, some
    # asynchronous (tests/shm_sequence_check.py; under mpirun in test_shm_mpi.py)
    wrong = cc.run_threads(size, lambda comm: run_sequence(comm, seed, 150, staging_bytes(comm)),
                           shm_bytes=64 << 10)
    assert wrong == [[]] * size
