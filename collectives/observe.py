"""Observing a Communicator: the one hook tracing, counting, the simulator's clock and
the flight recorder use.

    comm.add_observer(observer)       # from now on, on this rank's communicator
    comm.remove_observer(observer)

An observer overrides what it needs of `Observer`:
    wrap(transport)        see every message: return a wrapper (a TransportWrapper) around
                           the transport the collectives run on, or the transport unchanged
    reduce(dst, src, op, reverse, inner)
                           see every reduction: perform it with inner(dst, src, op, reverse)
                           (the next observer's, or the kernel), record or cost it, return dst
    call_started(sequence, signature), call_ended(sequence, signature, error)
                           every collective's start and end (error: the exception or None)

Observers run on the thread that runs the collective. Nothing else changes the
Communicator's transport; a Communicator without observers pays nothing for the hook.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from .transport.counting import CountingTransport, Counts


class Observer:
    """The base of observers: every method does nothing more than pass through. An
    observer that overrides `reduce` declares it with watches_reductions = True (the
    Communicator then routes reductions through it)."""
    watches_reductions = False

    def wrap(self, transport: Any) -> Any:
        """The transport collectives run on while observed (default: unchanged)."""
        return transport

    def reduce(self, dst: Any, src: Any, op: str, reverse: bool, inner: Callable) -> Any:
        """Perform dst = dst <op> src through `inner` (default: nothing else)."""
        return inner(dst, src, op, reverse)

    def call_started(self, sequence: int, signature: tuple) -> None:
        """Collective number `sequence` with call `signature` starts on this rank."""

    def call_ended(self, sequence: int, signature: tuple, error: Optional[BaseException]) -> None:
        """It ended: error is what it raised, or None."""


def chain_reducers(observers, plain):
    """One reducer(dst, src, op, reverse) that runs every observer's reduce around
    `plain`, the first observer outermost; None without observers."""
    if not observers:
        return None
    reducer = plain
    for observer in reversed(observers):
        reducer = _bound(observer, reducer)
    return reducer


def _bound(observer, inner):
    return lambda dst, src, op, reverse: observer.reduce(dst, src, op, reverse, inner)


class ByteCounter(Observer):
    """Counts the messages and bytes a communicator's collectives send from this rank
    (`sent`, `messages`), through a CountingTransport."""

    def __init__(self):
        self.counts = Counts()

    def wrap(self, transport):
        return CountingTransport(transport, self.counts)

    @property
    def sent(self) -> int:
        return self.counts.sent

    @property
    def messages(self) -> int:
        return self.counts.messages
