"""Waiting without hanging forever and without burning a core.

A wait on a shared-memory flag first spins briefly (`spin_briefly`, `quick_polls`: up to
QUICK_POLLS polls with nothing but a yield between them), since most flags turn within a
few scheduling rounds. Then, like every other wait, it polls for 100 ms, yielding the
core between polls (sched_yield: when ranks outnumber cores, the rank we wait for gets to
run at once instead of after our time slice), then sleeps between polls with exponential
backoff up to 1 ms, so an idle rank costs almost no CPU; past the deadline it raises
TransportTimeout.

A background thread whose own process keeps computing while it waits (a backend running
collectives behind PyTorch's backward pass) waits inside `sleeping_waits()`: it sleeps
from the first poll, so it never takes the core from that computation.
"""
import os
import threading
import time
from contextlib import contextmanager
from typing import Optional

from ..errors import TransportTimeout

SPIN_SECONDS = 0.1
MAX_SLEEP = 1e-3
QUICK_POLLS = 1000     # polls of spin_briefly before a wait pays for clocks and abort checks
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))
_this_thread = threading.local()     # .max_sleep set: this thread's waits do not spin


@contextmanager
def sleeping_waits(max_sleep: float = MAX_SLEEP):
    """Within the block, this thread's waits skip the spinning phase and sleep between
    polls from the start (5 us doubling up to `max_sleep` seconds): a wait then costs
    its thread almost no CPU and at most about max_sleep of extra latency."""
    previous = getattr(_this_thread, "max_sleep", None)
    _this_thread.max_sleep = max_sleep
    try:
        yield
    finally:
        _this_thread.max_sleep = previous


def quick_polls() -> int:
    """How many times a wait may poll a flag in a tight loop (yielding the core between
    polls, `yield_core()`) before it pays for the bounded wait: QUICK_POLLS, or 0 in a
    thread waiting inside sleeping_waits() (it must not spin)."""
    return QUICK_POLLS if getattr(_this_thread, "max_sleep", None) is None else 0


def yield_core() -> None:
    """Give the core to another runnable thread or process, if any (sched_yield)."""
    _yield()


def spin_briefly(ready, polls: Optional[int] = None) -> bool:
    """Yield the core and call ready() up to `polls` times (default quick_polls()); True
    as soon as it returns True. The cheapest wait there is (no clock, no deadline), for
    flags that usually turn within a few scheduling rounds; a caller falls back on
    poll_until when it returns False. Returns False at once in a thread waiting inside
    sleeping_waits(). Cost: one sched_yield and one ready() per poll."""
    if polls is None:
        polls = quick_polls()
    for _ in range(polls):
        _yield()
        if ready():
            return True
    return False


def poll_until(done, timeout, describe, peer=None, what=None, step=None):
    """Call done() until it returns True; raise TransportTimeout after `timeout` seconds
    (None or 0: never). `describe()` words the error."""
    if done():
        return
    start = time.monotonic()
    max_sleep = getattr(_this_thread, "max_sleep", None)
    spin_until = start + SPIN_SECONDS if max_sleep is None else start
    max_sleep = MAX_SLEEP if max_sleep is None else max_sleep
    deadline = start + timeout if timeout else None
    delay = 5e-6
    while not done():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise TransportTimeout(f"{describe()}: nothing after {now - start:.1f} s",
                                   peer=peer, what=what, waited=now - start, step=step)
        if now < spin_until:
            _yield()
        else:
            time.sleep(delay)
            delay = min(delay * 2, max_sleep)
