"""The flight recorder, timeouts and their settings, on the in-process transport."""
import json
import time

import numpy as np
import pytest

import collectives as cc
from collectives.flight import main as flight_main
from collectives.flight import read_records, summarize


def test_every_collective_is_recorded_with_its_fate():
    def body(comm):
        comm.allreduce(np.ones(3), algorithm="ring")
        comm.broadcast(np.ones(2), root=1, algorithm="tree")
        with pytest.raises(ValueError):
            comm.allreduce(np.ones(2), "bogus")         # rejected before it is recorded
        return comm.flight_record()
    record = cc.run_threads(2, body)[0]
    assert [(e["seq"], e["call"], e["state"]) for e in record] == [
        (1, "allreduce(count=3, dtype=float64, op=sum, algorithm=ring)", "completed"),
        (2, "broadcast(count=2, dtype=float64, root=1, algorithm=tree)", "completed")]
    assert all(e["left"] >= e["entered"] for e in record)


def test_a_timeout_names_the_call_the_step_and_the_rank_that_never_came(tmp_path):
    def body(comm):
        comm.allreduce(np.ones(4))
        if comm.rank == 2:
            comm.dump_flight_record()                    # rank 2 leaves early, record on disk
            return "left"
        comm.allreduce(np.ones(4), algorithm="ring")
    with pytest.raises(cc.CollectiveTimeout) as info:
        cc.run_threads(3, body, timeout=1, flight_dir=str(tmp_path))
    error = info.value
    assert "allreduce(count=4, dtype=float64, op=sum, algorithm=ring) #2 did not complete within 1 s" in str(error)
    assert "rank 2 never entered #2" in error.summary and "its last call was #1" in error.summary
    assert error.collective["seq"] == 2 and error.step >= 1
    records = read_records(str(tmp_path))
    assert sorted(records) == [0, 1, 2]
    assert records[0]["entries"][-1]["state"] == "timed out"


def test_summary_spots_calls_made_in_a_different_order():
    entry = lambda seq, call, state="timed out": {"seq": seq, "call": call, "state": state}
    records = {0: {"entries": [entry(1, "allreduce(count=4)")]},
               1: {"entries": [entry(1, "broadcast(count=4)")]}}
    text = summarize(records, 3)
    assert "called differently" in text and "ranks [1]: broadcast(count=4)" in text
    assert "rank 2 sent no flight record" in text


def test_summary_tells_other_arguments_from_another_order_and_says_who_left():
    entry = lambda seq, call, state="timed out": {"seq": seq, "call": call, "state": state}
    records = {0: {"entries": [entry(2, "broadcast(count=4, root=0)")]},
               1: {"entries": [entry(2, "broadcast(count=4, root=2)")]},
               2: {"entries": [entry(1, "allreduce(count=4)", "completed")], "ended": "exited (its program ended)"}}
    text = summarize(records, 4)
    assert "collective #2 was called with different arguments:" in text
    assert "ranks [1]: broadcast(count=4, root=2)" in text
    assert "rank 2 never entered #2" in text and "and then it exited (its program ended)" in text
    assert "rank 3 sent no flight record: it is busy elsewhere" in text and "exited or crashed" not in text


def test_flight_command_prints_the_summary(tmp_path, capsys):
    for rank, state in ((0, "timed out"), (1, "completed")):
        (tmp_path / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "size": 2, "entries": [
            {"seq": 1, "call": "allreduce(count=1)", "state": "completed"},
            *([{"seq": 2, "call": "allreduce(count=1)", "state": state}] if rank == 0 else [])]}))
    assert flight_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "rank 1 never entered #2 allreduce(count=1)" in out
    assert flight_main([str(tmp_path / "missing")]) == 1


@pytest.mark.parametrize("value, expected", [("", 300.0), ("12.5", 12.5), ("0", None), ("none", None)])
def test_timeout_from_environment(monkeypatch, value, expected):
    monkeypatch.setenv("COLLECTIVES_TIMEOUT", value)
    assert cc.timeout_from_env() == expected


def test_bad_timeouts_are_rejected(monkeypatch):
    monkeypatch.setenv("COLLECTIVES_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="COLLECTIVES_TIMEOUT"):
        cc.timeout_from_env()
    for bad in (-1, "5", True):
        with pytest.raises(ValueError, match="timeout"):
            cc.check_timeout(bad)


def test_no_timeout_waits_as_long_as_it_takes():
    def body(comm):
        assert comm.timeout is None
        if comm.rank == 0:
            time.sleep(0.3)
        return comm.allreduce(np.ones(1))[0]
    assert cc.run_threads(2, body, timeout=None) == [2.0, 2.0]
