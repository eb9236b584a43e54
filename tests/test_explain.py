"""bench.explain: the schedule it prints is what the algorithm really sends."""
import io

import numpy as np
import pytest

import collectives as cc
from bench import explain
from collectives import trace

CASES = [("allreduce", a) for a in ("ring", "tree", "recursive_doubling", "rabenseifner")] + [
    ("reduce_scatter", "ring"), ("reduce_scatter", "recursive_halving"),
    ("allgather", "ring"), ("allgather", "recursive_doubling"),
    ("broadcast", "tree"), ("broadcast", "pipeline"),
    ("reduce", "tree"), ("reduce", "pipeline"), ("reduce", "ring")]


def sends_per_rank(events, n):
    """For every rank, in order: (peer, element runs) of each message it sent."""
    out = [[] for _ in range(n)]
    for e in events:
        if "data" in e and "send" in e["data"]:
            out[e["rank"]].append((e["args"]["send_peer"], explain.runs(*explain.decode(e["data"]["send"], n))))
    return out


def real_sends(collective, algorithm, n, count, root=1, ranks_per_node=None):
    """The same call on the tests' in-process transport (rendezvous sends, real threads),
    traced with the data kept; with ranks_per_node, on emulated nodes of that many ranks,
    each with its own segment (as on the simulator's network)."""
    xs, _ = explain.inputs(collective, n, count, root)

    def body(comm):
        recorder = trace.enable(comm, keep_data=True)
        explain._call(comm, collective, xs[comm.rank].copy(), algorithm, root)
        trace.disable(comm)
        return recorder.events
    results = cc.run_threads(n, body, nodes=n // ranks_per_node if ranks_per_node else None)
    return sends_per_rank([e for events in results for e in events], n)


@pytest.mark.parametrize("collective, algorithm", CASES)
@pytest.mark.parametrize("n", [3, 4, 6])
def test_explained_schedule_matches_what_the_algorithm_sends_on_the_real_transport(collective, algorithm, n):
    count = 2 * n if collective == "allgather" else 7
    s = explain.schedule(algorithm, collective, n, count, root=1)
    assert s.ok
    assert sends_per_rank(s.events, n) == real_sends(collective, algorithm, n, count)


def test_hierarchical_schedule_matches_the_real_transport_too():
    s = explain.schedule("hierarchical", "allreduce", 6, 12, ranks_per_node=3)
    assert s.ok
    assert sends_per_rank(s.events, 6) == real_sends("allreduce", "hierarchical", 6, 12, ranks_per_node=3)


def test_ring_schedule_follows_the_textbook_invariant():
    n, count = 4, 8
    s = explain.schedule("ring", "allreduce", n, count)
    assert s.steps == 2 * (n - 1) and len(s.messages) == 2 * (n - 1) * n
    first = {m.src: m for m in s.messages if m.step == 1}
    for r in range(n):   # step 1: rank r sends its own block (r - 1) mod n to the right
        b = (r - 1) % n
        assert first[r].dst == (r + 1) % n
        assert first[r].runs == [(2 * b, 2 * b + 2, 1 << r)]
    after = s.holdings[n - 1]   # after the reduce-scatter, rank r holds block r in full
    for r in range(n):
        assert np.all(after[r, 2 * r:2 * r + 2] == (1 << n) - 1)
    assert np.all(s.holdings[-1] == (1 << n) - 1)


def test_pipelined_tree_with_chunks_takes_fewer_steps_than_chunks_times_depth():
    one = explain.schedule("pipeline", "broadcast", 5, 8, chunks=1)
    four = explain.schedule("pipeline", "broadcast", 5, 8, chunks=4)
    assert one.ok and four.ok
    assert one.steps == 4 and four.steps == 4 + 4 - 1     # depth + chunks - 1, not depth * chunks


def test_values_decode_to_element_and_contributors():
    n = 5
    total = explain.encode(0, [3, 4], n) + explain.encode(2, [3, 4], n) + explain.encode(4, [3, 4], n)
    index, masks = explain.decode(total, n)
    assert index.tolist() == [3, 4] and masks.tolist() == [0b10101, 0b10101]
    assert explain.decode(np.array([0, 7 << n]), n)[0].tolist() == [-1, -1]
    assert explain.ranks_text(0b10111, 5) == "{0-2,4}" and explain.ranks_text(0b11111, 5) == "all"


def test_command_prints_every_step_and_draws_the_diagram(tmp_path):
    out = io.StringIO()
    png = tmp_path / "ring.png"
    assert explain.main(["ring", "-n", "4", "--count", "8", "--png", str(png)], out=out) == 0
    text = out.getvalue()
    assert "step 6" in text and "step 7" not in text
    assert "rank  0 -> rank 1   [6:8) {0}" in text
    assert "result check: OK" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_rejects_an_unknown_algorithm():
    with pytest.raises(SystemExit, match="butterfly"):
        explain.main(["butterfly"], out=io.StringIO())
