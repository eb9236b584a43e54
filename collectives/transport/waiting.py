"""Waiting without hanging forever and without burning a core.

A wait first polls for 100 ms, yielding the core between polls (sched_yield: when ranks
outnumber cores, the rank we wait for gets to run at once instead of after our time
slice), then sleeps between polls with exponential backoff up to 1 ms, so an idle rank
costs almost no CPU; past the deadline it raises TransportTimeout.
"""
import os
import time

from ..errors import TransportTimeout

SPIN_SECONDS = 0.1
MAX_SLEEP = 1e-3
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


def poll_until(done, timeout, describe, peer=None, what=None, step=None):
    """Call done() until it returns True; raise TransportTimeout after `timeout` seconds
    (None or 0: never). `describe()` words the error."""
    if done():
        return
    start = time.monotonic()
    spin_until = start + SPIN_SECONDS
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
            delay = min(delay * 2, MAX_SLEEP)
