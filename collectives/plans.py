"""What a call signature needs on every call, worked out once: the per-call path's memory.

A Communicator remembers, per key (the collective, the buffer's type, dtype and shape,
and the arguments that change the checks or the choice of algorithm: op, algorithm,
root, counts, whether `out` is given), a `Plan`: the algorithm "auto" or the caller
picked, the checked op, the call signature that the flight recorder and the call tags
carry, and whether the buffer is on a GPU. Every check that depends on nothing but the
key ran when the plan was made (dtype supported, op valid for the dtype, algorithm
valid, root in range, counts adding up, a device reduction kernel for the dtype), so
a call whose key is known re-checks only what belongs to the array object itself: that
it is C-contiguous and writeable where written, and on a GPU, on this rank's device
(`buffers.check_instance`); an `out` array is checked in full on every call.

A plan holds while the tuning in use stays the same; the Communicator forgets its plans
when its transport changes (observers added or removed).
"""
from typing import Any, Callable, Optional

from . import tuning

LIMIT = 4096        # plans remembered per communicator before they are all forgotten


class Plan:
    """One call signature's resolved call: `signature` (the flight record's and the call
    tags'), `run` (the algorithm's function), `op` (the checked op, None where there is
    none), `device` (the buffer is a GPU array), `extra` (what the collective needs
    beside: block offsets, the root, whether 'avg' sums in float32), `prepared` (None, or
    the algorithm bound to this signature on the Communicator's transport:
    collectives.algorithms.prepare), `out_shape` (the shape an `out` array must have
    where it is not x's) and `writes_x` (the call writes into x on this rank: x must be
    writeable)."""
    __slots__ = ("signature", "run", "op", "device", "extra", "tuning", "prepared", "out_shape", "writes_x")

    def __init__(self, signature: tuple, run: Callable, op: Optional[str] = None, device: bool = False,
                 extra: Any = None, prepared: Optional[Callable] = None, out_shape: Optional[tuple] = None,
                 writes_x: bool = False) -> None:
        self.signature, self.run, self.op, self.device, self.extra = signature, run, op, device, extra
        self.prepared, self.out_shape, self.writes_x = prepared, out_shape, writes_x
        self.tuning = None


class Plans:
    """A Communicator's plans by key (see the module docstring). Cost of a known key: one
    dict lookup and one identity test of the tuning in use."""

    def __init__(self) -> None:
        self._plans = {}

    def get(self, x: Any, key: tuple, build: Callable[..., Plan], *args: Any) -> Plan:
        """The plan for a call on x: `key` holds the collective's name and the arguments
        that change its checks or algorithm; x's type, dtype and shape are added. Made by
        build(x, *args), which checks the arguments and raises where they are wrong, when
        the key is new or the tuning changed since. Anything that is not an array, or an
        unhashable argument, goes to build every time (its checks name what is wrong)."""
        try:
            key = (type(x), x.dtype, x.shape) + key
            plan = self._plans.get(key)
        except (AttributeError, TypeError):
            key = None
        if key is None:                 # outside the except: build's error is not chained to it
            return build(x, *args)
        in_use = tuning.current()
        if plan is None or plan.tuning is not in_use:
            plan = build(x, *args)
            plan.tuning = in_use
            if len(self._plans) >= LIMIT:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def known(self, key: tuple) -> Optional[Plan]:
        """The plan stored under the full `key` (x's type, dtype and shape, then get's key)
        if there is one, made under the tuning in use; else None (an unhashable key too).
        Builds nothing and checks nothing: for a caller's fast path that falls back on get.
        Cost: one dict lookup and one identity test."""
        try:
            plan = self._plans.get(key)
        except TypeError:
            return None
        return plan if plan is not None and plan.tuning is tuning.current() else None

    def clear(self) -> None:
        """Forget every plan (the transport they were made for changed)."""
        self._plans.clear()
