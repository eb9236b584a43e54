"""Traces: one event per step per rank, valid Chrome trace-event JSON, off by default."""
import json

import numpy as np
import pytest

import collectives as cc
from collectives import trace
from tests.mpirun import mpirun


def traced(size, call, count=12):
    """Run call(comm, x) with tracing on every rank; returns (all events, results)."""
    def body(comm):
        x = np.arange(count, dtype=np.float64) + comm.rank
        with trace.tracing(comm) as recorder:
            with recorder.span("call", x=x):
                result = call(comm, x)
        return trace.gather(comm, recorder), result
    out = cc.run_threads(size, body)
    return out[0][0], [r for _, r in out]


def test_ring_allreduce_records_one_sendrecv_per_step_and_one_reduction_per_reduce_step():
    n = 4
    events, _ = traced(n, lambda comm, x: comm.allreduce(x, algorithm="ring"))
    for rank in range(n):
        mine = [e for e in events if e["rank"] == rank]
        steps = [e for e in mine if e["cat"] == "sendrecv"]
        assert len(steps) == 2 * (n - 1)
        assert {e["args"]["send_peer"] for e in steps} == {(rank + 1) % n}
        assert {e["args"]["recv_peer"] for e in steps} == {(rank - 1) % n}
        assert all(e["args"]["send_bytes"] == 3 * 8 for e in steps)        # 12 float64 / 4 blocks
        assert len([e for e in mine if e["cat"] == "reduce"]) == n - 1
        assert all(e["args"]["op"] == "sum" for e in mine if e["cat"] == "reduce")


def test_chunks_name_the_buffer_and_elements():
    events, _ = traced(4, lambda comm, x: comm.allreduce(x, algorithm="ring"))
    first = [e for e in events if e["rank"] == 0 and e["cat"] == "sendrecv"][0]
    # step 0 of the ring: rank 0 sends its own x's block (0 - 1) mod 4 = 3, elements 9..12
    assert first["args"]["send_chunk"] == "x[9:12]"
    assert first["args"]["recv_chunk"].startswith("scratch[")


def test_nonblocking_steps_are_recorded_when_waited_for():
    events, results = traced(5, lambda comm, x: comm.broadcast(x, 0, algorithm="tree"))
    for r in results:
        assert np.array_equal(r, np.arange(12.0))
    received = [e for e in events if e["cat"] == "recv"]
    assert sorted(e["rank"] for e in received) == [1, 2, 3, 4]   # every non-root once (one chunk)
    assert all(e["args"]["chunk"] == "x[0:12]" and e["args"]["bytes"] == 96 for e in received)


def test_chrome_file_is_valid_trace_event_json_with_a_track_per_rank(tmp_path):
    n = 3
    events, _ = traced(n, lambda comm, x: comm.allreduce(x, algorithm="recursive_doubling"))
    path = trace.write_chrome(tmp_path / "out.json", events, {"what": "test"})
    data = json.loads(path.read_text())
    complete = [e for e in data["traceEvents"] if e["ph"] == "X"]
    names = [e for e in data["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert sorted(e["pid"] for e in names) == list(range(n))
    assert len(complete) == len(events)
    for e in complete:
        assert {"name", "cat", "ts", "dur", "pid", "tid", "args"} <= set(e)
        assert e["pid"] == e["tid"] and e["ts"] >= 0 and e["dur"] >= 0
    assert data["otherData"] == {"what": "test"}
    spans = [e for e in complete if e["cat"] == "call"]
    assert len(spans) == n                       # the parent span of every rank


def test_tracing_is_off_by_default_and_disable_restores_everything():
    def body(comm):
        original = comm.transport
        assert comm.observers == ()
        recorder = trace.enable(comm)
        assert comm.transport is not original and len(comm.observers) == 1
        comm.allreduce(np.ones(4), algorithm="ring")
        trace.disable(comm)
        seen = len(recorder.events)
        reductions = sum(e["cat"] == "reduce" for e in recorder.events)
        comm.allreduce(np.ones(4), algorithm="ring")        # not recorded any more
        return comm.transport is original, comm.observers, seen, reductions, len(recorder.events)
    for restored, observers, seen, reductions, after in cc.run_threads(2, body):
        assert restored and observers == () and seen > 0 and reductions > 0 and after == seen


def test_each_traced_communicator_records_only_its_own_reductions():
    def body(comm):
        rows = comm.split(comm.rank % 2)
        with trace.tracing(comm) as recorder:
            rows.allreduce(np.ones(4), algorithm="ring")        # another communicator: not seen
            untraced = len(recorder.events)
            comm.allreduce(np.ones(4), algorithm="ring")
        rows.free()
        return untraced, sum(e["cat"] == "reduce" for e in recorder.events)
    for untraced, reductions in cc.run_threads(4, body):
        assert untraced == 0 and reductions > 0


def test_traced_communicator_still_offers_the_same_algorithms():
    def body(comm):
        before = comm.algorithms("allreduce")
        with trace.tracing(comm):
            return before, comm.algorithms("allreduce")
    before, during = cc.run_threads(2, body)[0]
    assert before == during


@pytest.mark.mpi
def test_benchmark_trace_gathers_every_rank_into_one_file_and_plot_is_written(tmp_path):
    path, png = tmp_path / "trace.json", tmp_path / "busbw.png"
    result = mpirun(2, "-m", "bench.allreduce", "-b", "64", "-e", "512", "-f", "8", "-n", "1", "-w", "0",
                    "--trace", str(path), "--plot", str(png))
    assert result.returncode == 0, result.stdout + result.stderr
    events = [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in events} == {0, 1}
    spans = {e["name"] for e in events if e["cat"] == "call" and e["pid"] == 0}
    assert spans == {f"allreduce {a} {s} B" for a in ("ring", "tree", "recursive_doubling", "rabenseifner",
                                                      "oneshot", "twoshot", "shm_ring", "mpi", "mpi4py")
                 for s in (64, 512)}                          # mpi4py: MPI straight, a bare span
    assert any(e["cat"] == "native" for e in events)           # MPI's own call: one event
    ring = [e for e in events if e["pid"] == 1 and e["cat"] == "sendrecv"]
    assert ring and all(e["args"]["send_peer"] == 0 for e in ring)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
