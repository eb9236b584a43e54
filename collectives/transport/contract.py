"""The transport contract: what every transport offers the layers above it, as code.

A transport is one rank's endpoint in a group of ranks. The algorithms and the
Communicator use nothing else of it than what `Transport` lists, plus what it declares in
`capabilities` (a `Capabilities`); they never probe for optional attributes. A new
transport implements the calls below, declares its capabilities, and passes the
conformance suite in tests/test_transport_contract.py (append one entry there).

Buffers are 1-D C-contiguous arrays (views of the user's data or of a workspace).
Messages between one pair of ranks are matched in the order they were posted, as in MPI;
there are no tags because collectives on one communicator run in the same order on every
rank. Failures raise `collectives.errors.TransportError` (a wait past the timeout:
`TransportTimeout`), never a library's own exception type.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

# The collectives a transport may offer natively, as `native_<name>` methods (alltoallv is
# the "mpi" algorithm of alltoall with any counts).
NATIVE_COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce", "alltoall", "alltoallv",
                      "gather", "scatter", "scan", "exscan")


@dataclass(frozen=True)
class Capabilities:
    """What a transport offers beyond the required calls; the defaults mean "nothing more".

    ranks_per_node   ranks r and s share a node iff r // g == s // g (None: unknown, or one
                     node); the "hierarchical" algorithm needs it to divide the size
    cost_model       a tuning.CostModel the algorithms plan with instead of the tuning
                     file's (the simulated network's own)
    nominal_nbytes   callable(buf) -> the bytes buf stands for, where a transport moves
                     smaller buffers than it models (the simulator); None: buf.nbytes
    pipeline_chunks  a fixed chunk count for the pipelined algorithms (None: from the model)
    native           names of the collectives offered as `native_<name>(...)` methods
                     (MPI's own; algorithm "mpi")
    cuda_aware       the transport takes device (CuPy) buffers directly; otherwise the
                     Communicator stages them through pinned host memory
    shared_segment   the per-node shared-memory segment of the ranks on this node (peer
                     views and flags), where the transport has one; None otherwise
    can_split        split() works (the simulator runs one communicator: it cannot)
    """
    ranks_per_node: Optional[int] = None
    cost_model: Any = None
    nominal_nbytes: Optional[Callable[[Any], float]] = None
    pipeline_chunks: Optional[int] = None
    native: frozenset = frozenset()
    cuda_aware: bool = False
    shared_segment: Any = None
    can_split: bool = True

    def replace(self, **changes: Any) -> Capabilities:
        """A copy with `changes` applied (what a wrapper that adjusts capabilities uses)."""
        return dataclasses.replace(self, **changes)


NO_CAPABILITIES = Capabilities()


@runtime_checkable
class Request(Protocol):
    """A started send or receive."""

    def wait(self) -> Any:
        """Complete it (bounded by the transport's timeout)."""

    def test(self) -> bool:
        """True once it has completed; never blocks."""


@runtime_checkable
class Transport(Protocol):
    """One rank's endpoint: the calls every transport and wrapper implements.

    rank, size      this endpoint's rank and the group size
    capabilities    what it offers beyond these calls (see Capabilities)
    timeout         seconds a wait may take before TransportTimeout (None: forever)
    step            waits completed since the last begin_call (for error messages)
    """
    rank: int
    size: int
    capabilities: Capabilities
    timeout: Optional[float]
    step: int

    def sendrecv(self, sendbuf: Any, dest: Optional[int], recvbuf: Any, source: Optional[int]) -> None:
        """Send `sendbuf` to `dest` and receive `recvbuf` from `source` at once (either
        side may be None); returns when both are complete."""

    def isend(self, buf: Any, dest: int) -> Request:
        """Start sending `buf` to `dest`; `buf` must not change until the request completes."""

    def irecv(self, buf: Any, source: int) -> Request:
        """Post a receive of `buf` from `source`; matched in posting order."""

    def waitall(self, requests: Sequence[Request]) -> None:
        """Complete every request (bounded by the timeout)."""

    def barrier(self) -> None:
        """Return once every rank of the group has entered the barrier."""

    def allgather_object(self, obj: Any) -> list:
        """Every rank's picklable `obj`, in rank order (the small control plane)."""

    def split(self, color: Optional[int], key: int = 0, segment: bool = True) -> Optional[Transport]:
        """A transport over the ranks that passed the same `color`, ranked by (key, rank);
        color None: this rank joins none (returns None). Called by every rank. segment=False:
        the new transport gets no shared segment even where it could (a duplicate that only
        carries point-to-point messages)."""

    def free(self, together: bool = True) -> None:
        """Release what this endpoint holds (an MPI communicator, channels); called once,
        when its Communicator is freed. Nothing is called on it afterwards. together: every
        rank frees its endpoint at the same point of the program (comm.free(), `with`), so
        the release may wait for the others; False when garbage collection frees it, at a
        moment of this rank's own: then nothing may wait for another rank."""

    def set_timeout(self, seconds: Optional[float]) -> None:
        """Make later waits raise TransportTimeout after `seconds` (None: wait forever)."""

    def begin_call(self, sequence: int, signature: tuple) -> None:
        """A collective starts on this transport: its sequence number on the communicator
        and its call signature (name, counts, dtype, op, ..., algorithm). Resets `step`;
        the transport may keep the identity (e.g. to tag or check messages)."""


class CallState:
    """The per-call state a transport keeps for the Communicator: `timeout`, `step` and
    `call`, set only through set_timeout and begin_call. Transports inherit it."""
    timeout: Optional[float] = None
    step: int = 0
    call: Optional[tuple] = None

    def set_timeout(self, seconds: Optional[float]) -> None:
        """Make later waits raise TransportTimeout after `seconds` (None or 0: forever)."""
        self.timeout = seconds or None

    def begin_call(self, sequence: int, signature: tuple) -> None:
        """Remember the collective now starting, and restart the step count."""
        self.call = (sequence, signature)
        self.step = 0

