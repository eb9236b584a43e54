"""bench.explain and traces show the shared-memory schedules: who reads which block of
whose slot, at which sync point, recorded by running the real algorithms."""
import io

import numpy as np
import pytest

import collectives as cc
from bench import explain
from collectives import trace

SHM_CASES = [("allreduce", "oneshot"), ("allreduce", "twoshot"), ("reduce_scatter", "shm"),
             ("allgather", "shm"), ("broadcast", "shm"), ("reduce", "shm")]


def reads(s, step):
    """{(reader, owner, runs)} of the reads of peers' slots at `step`."""
    return {(m.dst, m.src, tuple(m.runs)) for m in s.messages if m.step == step and m.read}


def test_twoshot_at_4_ranks_reduces_block_r_on_rank_r_then_everyone_copies_the_blocks_out():
    n, count, everyone = 4, 8, 0b1111
    s = explain.schedule("twoshot", "allreduce", n, count)
    assert s.ok and s.steps == 2
    assert not [m for m in s.messages if not m.read]                # no message at all
    # step 1: rank r reads block r = [2r, 2r+2) of every peer j's published input
    assert reads(s, 1) == {(r, j, ((2 * r, 2 * r + 2, 1 << j),)) for r in range(n) for j in range(n) if j != r}
    # step 2: rank r reads block j, fully reduced, from rank j's slot
    assert reads(s, 2) == {(r, j, ((2 * j, 2 * j + 2, everyone),)) for r in range(n) for j in range(n) if j != r}
    after_reduce = s.holdings[1]
    for r in range(n):
        assert (after_reduce[r, 2 * r:2 * r + 2] == everyone).all()


def test_oneshot_reads_every_peers_whole_input_after_one_sync_point():
    n, count = 4, 6
    s = explain.schedule("oneshot", "allreduce", n, count)
    assert s.ok and s.steps == 1
    assert reads(s, 1) == {(r, j, ((0, count, 1 << j),)) for r in range(n) for j in range(n) if j != r}


@pytest.mark.parametrize("collective, algorithm", SHM_CASES)
@pytest.mark.parametrize("n", [3, 4])
def test_explained_reads_are_what_the_real_transport_reads(collective, algorithm, n):
    count = 2 * n if collective == "allgather" else 7
    s = explain.schedule(algorithm, collective, n, count, root=1)
    assert s.ok
    # as multisets: a rank copies peers' reduced blocks in the order they become ready
    assert sorted_reads(reads_per_rank(s.events, n)) == sorted_reads(real_reads(collective, algorithm, n, count))
    if collective == "broadcast":               # every other rank reads the root's slot only
        assert {(m.dst, m.src) for m in s.messages} == {(r, 1) for r in range(n) if r != 1}


def sorted_reads(per_rank):
    return [sorted(reads) for reads in per_rank]


def reads_per_rank(events, n):
    """For every rank, in order: (owner, element runs) of each read of a peer's slot."""
    out = [[] for _ in range(n)]
    for e in events:
        if e["cat"] == "shm" and "data" in e and "recv" in e["data"]:
            out[e["rank"]].append((e["args"]["peer"], explain.runs(*explain.decode(e["data"]["recv"], n))))
    return out


def real_reads(collective, algorithm, n, count, root=1):
    """The same call on the in-process transport (real threads, real segment), traced."""
    xs, _ = explain.inputs(collective, n, count, root)

    def body(comm):
        with trace.tracing(comm, keep_data=True) as recorder:
            explain._call(comm, collective, xs[comm.rank].copy(), algorithm, root)
        return recorder.events
    return reads_per_rank([e for events in cc.run_threads(n, body) for e in events], n)


def test_a_trace_of_twoshot_records_its_sync_points_and_reads_with_peers_and_bytes():
    x = np.arange(4096, dtype=np.float32)

    def body(comm):
        with trace.tracing(comm) as recorder:
            comm.allreduce(x.copy(), algorithm="twoshot")
        return trace.chrome(trace.portable(recorder.events))["traceEvents"]
    events = [e for rank in cc.run_threads(4, body) for e in rank if e.get("ph") == "X"]
    syncs = [e for e in events if e["name"].startswith("shm sync")]
    peer_reads = [e for e in events if e["name"].startswith("shm read")]
    assert len(syncs) == 4 * 2                                   # two sync points per rank
    assert len(peer_reads) == 4 * 2 * 3                          # 3 peers' blocks, twice
    assert {e["args"]["bytes"] for e in peer_reads} == {x.nbytes // 4}
    assert all(e["args"]["peer"] != e["pid"] for e in peer_reads)
    assert any(e["cat"] == "reduce" for e in events)


def test_bench_explain_prints_the_shared_memory_schedule():
    out = io.StringIO()
    assert explain.main(["twoshot", "-n", "4"], out=out) == 0
    text = out.getvalue()
    assert "shared-memory sync point" in text and "rank  0 reads rank 1's slot  [0:2) {1}" in text
    assert "result check: OK" in text
