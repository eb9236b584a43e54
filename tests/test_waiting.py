"""How a transport wait passes its time: it yields the core between polls first (a rank
waited for gets to run at once), then sleeps with backoff; inside sleeping_waits() a
thread sleeps from the first poll (a background thread must not take the core from its
own process's computation), and past the deadline any wait raises."""
import threading

import pytest

import collectives.transport.waiting as waiting
from collectives.errors import TransportTimeout


@pytest.fixture
def recorded(monkeypatch):
    """The yields and sleeps poll_until makes, in order: ("yield", None) / ("sleep", s)."""
    calls = []
    monkeypatch.setattr(waiting, "_yield", lambda: calls.append(("yield", None)))
    monkeypatch.setattr(waiting.time, "sleep", lambda s: calls.append(("sleep", s)))
    return calls


def done_after(polls):
    count = iter(range(polls, -1, -1))
    return lambda: next(count) == 0


def test_a_wait_yields_the_core_before_it_sleeps(recorded):
    waiting.poll_until(done_after(20), 10, lambda: "test")
    assert recorded and {kind for kind, _ in recorded} == {"yield"}


def test_inside_sleeping_waits_a_wait_never_spins_and_sleeps_at_most_max_sleep(recorded):
    with waiting.sleeping_waits(max_sleep=1e-4):
        waiting.poll_until(done_after(20), 10, lambda: "test")
    kinds = {kind for kind, _ in recorded}
    delays = [s for kind, s in recorded if kind == "sleep"]
    assert kinds == {"sleep"} and len(delays) == 19
    assert delays == sorted(delays) and delays[0] < 1e-4 and max(delays) == 1e-4


def test_sleeping_waits_nests_and_ends_with_its_block(recorded):
    with waiting.sleeping_waits(max_sleep=1e-3):
        with waiting.sleeping_waits(max_sleep=1e-4):
            pass
        waiting.poll_until(done_after(20), 10, lambda: "test")
        assert max(s for _, s in recorded) == 1e-3
    recorded.clear()
    waiting.poll_until(done_after(3), 10, lambda: "test")
    assert {kind for kind, _ in recorded} == {"yield"}


def test_sleeping_waits_belongs_to_the_thread_that_entered_it(recorded):
    with waiting.sleeping_waits():
        other = threading.Thread(target=waiting.poll_until, args=(done_after(5), 10, lambda: "test"))
        other.start()
        other.join()
    assert {kind for kind, _ in recorded} == {"yield"}


def test_a_sleeping_wait_still_ends_at_its_deadline():
    with waiting.sleeping_waits():
        with pytest.raises(TransportTimeout, match="never: nothing after"):
            waiting.poll_until(lambda: False, 0.02, lambda: "never")


def test_spin_briefly_yields_between_polls_and_stops_when_ready(recorded):
    assert waiting.spin_briefly(done_after(5), polls=100)
    assert recorded == [("yield", None)] * 6       # ready() turned on its sixth call
    recorded.clear()
    assert not waiting.spin_briefly(lambda: False, polls=7)
    assert recorded == [("yield", None)] * 7


def test_inside_sleeping_waits_nothing_spins(recorded):
    polled = []
    with waiting.sleeping_waits():
        assert waiting.quick_polls() == 0
        assert not waiting.spin_briefly(lambda: polled.append(1) or True)
    assert not polled and not recorded
    assert waiting.quick_polls() == waiting.QUICK_POLLS
