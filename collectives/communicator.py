"""The Communicator: the public face of the engine.

It checks arguments on the calling rank before any communication, optionally checks that
all ranks called alike (debug mode), picks the algorithm, and runs it synchronously or on
the communicator's ordered background thread.
"""
from __future__ import annotations

import math
import numbers
import os
import uuid
import weakref
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import algorithms as registry
from . import buffers, tuning
from .algorithms.common import Workspace, plain_reduce, reductions_through
from .algorithms.shm import segment_of
from .arguments import as_int
from .buffers import Array
from .errors import CollectiveMismatch, CollectiveTimeout, MessageError, TransportError, TransportTimeout
from .extended import Collectives, offsets_from_counts
from .flight import FlightRecorder, default_directory, describe, failed_between_ranks, read_records, summarize
from .mismatch import explain
from .observe import Observer, chain_reducers
from .ops import SUM, check_dtype, check_op, combine_op, finish_avg, wide_avg
from .partition import partition
from .plans import Plan, Plans
from .transport.contract import Transport
from .transport.segment import heap_array
from .transport.staged import DirectDeviceTransport, StagedTransport
from .work import OrderedExecutor, Work

DEFAULT_TIMEOUT = 300.0


def debug_from_env() -> bool:
    """True when COLLECTIVES_DEBUG is set to 1/true/yes/on."""
    return os.environ.get("COLLECTIVES_DEBUG", "").lower() in ("1", "true", "yes", "on")


def timeout_from_env(default: Optional[float] = DEFAULT_TIMEOUT) -> Optional[float]:
    """Seconds from COLLECTIVES_TIMEOUT (0 or 'none': wait forever), else `default`."""
    text = os.environ.get("COLLECTIVES_TIMEOUT", "").strip().lower()
    if not text:
        return default
    if text in ("0", "none", "inf"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"COLLECTIVES_TIMEOUT must be a number of seconds, got {text!r}") from None


def check_timeout(timeout: Optional[float]) -> Optional[float]:
    """None for 'wait forever' (None, 0 or inf), else a positive float; ValueError otherwise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout >= 0:
        raise ValueError(f"timeout must be a non-negative number of seconds, inf or None, got {timeout!r}")
    if timeout == 0 or math.isinf(timeout):
        return None
    return float(timeout)


class Communicator(Collectives):
    """A group of ranks that run collectives together (see collectives/__init__.py).

    Create one with `cc.init()` (over MPI) or `cc.run_threads()` (in-process); `split`
    makes sub-communicators. A Communicator owns its transport: `free()` (or the end of a
    `with comm:` block, or garbage collection) releases the transport (the MPI
    communicator), the background thread and the workspaces.
    """

    def __init__(self, transport: Transport, debug: bool = False, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 flight_dir: Optional[str] = None) -> None:
        self._base = transport                # what this communicator owns and frees
        self._transport = transport           # what collectives run on: _base wrapped by the observers
        self.rank = transport.rank
        self.size = transport.size
        self.debug = debug
        transport.set_timeout(check_timeout(timeout))
        self._workspace = Workspace()
        self._executor = OrderedExecutor(f"collectives-rank{self.rank}")
        self._sequence = 0
        self._choices = {}                    # _resolve's memory
        self._flight = FlightRecorder(self.rank, self.size)
        self._observers = [self._flight]      # the flight recorder first, then add_observer's
        self._watchers = ()                   # add_observer's (the flight recorder is called directly)
        self._plans = Plans()                 # per call signature: what the checks and _resolve found
        self._reducer = None                  # the observers' reduction chain, if any watches
        if flight_dir is None:               # every rank must agree on the folder: rank 0 names it
            job = transport.allgather_object(uuid.uuid4().hex[:12] if self.rank == 0 else None)[0]
            flight_dir = default_directory(job)
        self.flight_dir = flight_dir
        self.cuda_aware = buffers.cuda_aware_mpi(lambda: transport.capabilities.cuda_aware)
        self._device_transport = None
        self.device = None                    # the GPU this rank uses (set by cc.init), if any
        # send/recv travel on a duplicate of the transport, so they never mix with collectives
        self._p2p = transport.split(0, self.rank, segment=False) if transport.capabilities.can_split else None
        self._freed = False
        self._children = weakref.WeakSet()    # live sub-communicators: free() frees them too
        self._freed_by_call = [False]        # free() sets it: every rank frees together
        # Runs once, on free() or when this object is collected; it must not reference self.
        self._release = weakref.finalize(self, _release, self._executor, transport, self._workspace,
                                         self._p2p, self._freed_by_call)
        self._release.atexit = False          # at exit the process ends: nothing to hand back

    def _point_to_point(self):
        """The duplicate transport that carries send/recv."""
        self._check_usable("send/recv")
        if self._p2p is None:
            raise TypeError(f"send/recv need a transport that can split; "
                            f"{type(self.transport).__name__} cannot")
        return self._p2p

    def _route(self, x):
        """The transport for a collective on x, called when it starts: the host transport,
        or for GPU arrays a wrapper that stages through pinned host memory (or, with a
        CUDA-aware MPI, hands device pointers over directly)."""
        if not buffers.is_device(x):
            return self.transport
        wrapper = self._device_transport
        if wrapper is None or wrapper.inner is not self.transport:
            wrapper = (DirectDeviceTransport if self.cuda_aware else StagedTransport)(self.transport)
            self._device_transport = wrapper
        wrapper.begin()
        return wrapper

    def _transport_for(self, plan, x):
        """The transport for a call on x with `plan`: _route(x) where the plan found device
        buffers, else the host transport without asking again."""
        return self._route(x) if plan.device else self._transport

    @property
    def transport(self) -> Transport:
        """The transport collectives run on (wrapped by the observers' wrap, if any)."""
        return self._transport

    @property
    def observers(self) -> tuple:
        """The observers added with add_observer, in order."""
        return tuple(self._observers[1:])

    def add_observer(self, observer: Observer) -> None:
        """Tell `observer` (see collectives.observe) about every later collective on this
        rank's communicator: its messages (through observer.wrap), reductions and calls.
        Queued asynchronous work finishes first. Local: no messages."""
        self._check_usable("add_observer")
        self._executor.drain()
        self._observers.append(observer)
        self._rebuild_observation()

    def remove_observer(self, observer: Observer) -> None:
        """Stop telling `observer`; ValueError if it was not added."""
        if observer not in self.observers:
            raise ValueError(f"rank {self.rank}: {observer!r} is not an observer of this communicator")
        self._executor.drain()
        self._observers.remove(observer)
        self._rebuild_observation()

    def _rebuild_observation(self):
        transport = self._base
        for observer in self._observers:
            transport = observer.wrap(transport)
        self._transport = transport
        self._watchers = tuple(self._observers[1:])
        self._plans.clear()
        watching = [o for o in self._observers if o.watches_reductions]
        self._reducer = chain_reducers(watching, plain_reduce)

    @property
    def timeout(self) -> Optional[float]:
        """Seconds a collective may wait on a peer before CollectiveTimeout (None: forever)."""
        return self.transport.timeout

    def flight_record(self) -> list:
        """The last collectives this rank entered: dicts with seq, call, algorithm, state, times."""
        return list(self._flight.entries)

    def dump_flight_record(self, directory: Optional[str] = None) -> str:
        """Write this rank's flight record to DIRECTORY/rank<r>.json (default: flight_dir)."""
        return self._flight.dump(directory or self.flight_dir)

    def __repr__(self):
        return (f"<Communicator rank {self.rank} of {self.size} over "
                f"{type(self.transport).__name__}{' debug' if self.debug else ''}>")

    # -- lifetime ------------------------------------------------------------------------
    def free(self) -> None:
        """Release this communicator and every sub-communicator split from it that is
        still alive: queued asynchronous work finishes first (its Work handles keep their
        results or errors), then the background thread ends, the transport (the MPI
        communicator) is freed and the workspaces dropped. Call it on every rank; calling
        it again does nothing, and any later collective raises RuntimeError. Local: no
        messages."""
        if self._freed:
            return
        self._freed = True
        for child in list(self._children):
            child.free()
        self._executor.close(wait=True)
        self._device_transport = None
        self._freed_by_call[0] = True
        self._release()

    def record_exit(self, how):
        """Write this rank's flight record, and its live sub-communicators', saying that
        the rank is leaving (`how`, e.g. "exited"), so that ranks waiting for it can say so."""
        self._flight.ended = how
        try:
            self._flight.dump(self.flight_dir)
        except OSError:
            pass
        for child in list(self._children):
            child.record_exit(how)

    def remove_flight_records(self):
        """Remove this rank's flight record files (its sub-communicators' too), and their
        folders once empty."""
        for child in list(self._children):
            child.remove_flight_records()
        self._flight.remove(self.flight_dir)

    def unfinished(self):
        """The flight-record entry of the last collective, where it is still running or
        failed because ranks lost each other (a timeout, a broken message; not a local
        error such as a dtype MPI cannot reduce, not a mismatch every rank involved raised,
        nor a failure later calls got past), on this communicator
        and the sub-communicators split from it that are alive (what the exit hook of
        collectives.exits checks)."""
        last = self._flight.last
        running = last is not None and last["state"] == "entered"
        entries = [last] if running or (last is not None and failed_between_ranks(last)) else []
        for child in list(self._children):
            entries += child.unfinished()
        return entries

    @property
    def freed(self) -> bool:
        """True once free() was called."""
        return self._freed

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.free()

    def _check_usable(self, what):
        if self._freed:
            raise RuntimeError(f"rank {self.rank}: {what} on a freed Communicator (comm.free() was "
                               "called or its with-block ended): create or split a new one")

    # -- buffers in the shared segment -------------------------------------------------
    def empty(self, shape, dtype=np.float64) -> np.ndarray:
        """An uninitialised NumPy array for collectives on this communicator.

        Where the ranks share a segment with room left, the array lives in this rank's
        part of it (the CPU analogue of NCCL's registered buffers): a shared-memory
        collective on it reads it in place instead of copying it in first. Otherwise it is
        ordinary memory. Its bytes go back to the segment when the array and every view
        of it are gone. Local: no communication.
        """
        dtype = np.dtype(dtype)
        check_dtype(dtype)
        shape = tuple(as_int(d, "shape entry", low=0) for d in ((shape,) if np.ndim(shape) == 0 else shape))
        segment = segment_of(self.transport)
        array = heap_array(segment, shape, dtype) if segment is not None else None
        return np.empty(shape, dtype) if array is None else array

    def zeros(self, shape, dtype=np.float64) -> np.ndarray:
        """As `empty`, filled with zeros."""
        array = self.empty(shape, dtype)
        array[...] = 0
        return array

    def in_segment(self, x: Array) -> bool:
        """True when x's data lie in this rank's part of the shared segment (an array from
        `empty`/`zeros`, or a view of one), which `twoshot` (and `oneshot` out of place
        from 512 KiB) read without copying it in; False for anything else, e.g. when
        `empty` found no room and gave ordinary memory. Local; cost: a few attribute
        lookups and comparisons."""
        segment = segment_of(self.transport)
        return segment is not None and segment.offset_in_heap(x) is not None

    # -- choosing algorithms -----------------------------------------------------------
    def algorithms(self, collective: str, device: bool = False) -> list:
        """Algorithm names valid for `collective` on this communicator (no "auto"); with
        `device=True`, those valid for GPU (CuPy) buffers, which cannot use the algorithms
        that read peers' inputs in the host's shared segment. Cost: a list filter."""
        if collective not in registry.ALGORITHMS:
            raise ValueError(f"unknown collective {collective!r}: valid are "
                             f"{', '.join(map(repr, registry.ALGORITHMS))}")
        valid = registry.names(collective, self.transport)
        if device:
            valid = [name for name in valid if name not in registry.NEEDS_SEGMENT]
        return valid

    def _resolve(self, collective, algorithm, nbytes, device=False):
        """The algorithm to run: `algorithm` checked, or for "auto" the cost model's pick.
        Remembered per (collective, algorithm, bytes, device) while the transport and the
        tuning in use stay the same, so a repeated call costs one dict lookup."""
        key = (collective, algorithm, nbytes, device)
        known = self._choices.get(key)
        current = tuning.current()
        if known is not None and known[0] is self._transport and known[1] is current:
            return known[2]
        name = self._choose(collective, algorithm, nbytes, device)
        if len(self._choices) >= 4096:
            self._choices.clear()
        self._choices[key] = (self._transport, current, name)
        return name

    def _choose(self, collective, algorithm, nbytes, device):
        valid = self.algorithms(collective, device=device)
        if algorithm == "auto":
            ours = [name for name in valid if name != registry.NATIVE]
            return tuning.choose(collective, ours, nbytes, self.size,
                                 ranks_per_node=self.transport.capabilities.ranks_per_node)
        if algorithm not in valid:
            listed = ", ".join(map(repr, valid))
            if device and algorithm in self.algorithms(collective):
                raise ValueError(f"{collective} algorithm {algorithm!r} needs host (NumPy) buffers: "
                                 f"it reads peers' inputs in the shared segment; for GPU buffers "
                                 f"valid are 'auto', {listed}")
            raise ValueError(f"unknown {collective} algorithm {algorithm!r}: valid are 'auto', {listed}")
        return algorithm

    def _check_root(self, root):
        """root as an int in [0, size) (NumPy integers accepted); ValueError otherwise."""
        return as_int(root, "root", high=self.size)

    # -- running ----------------------------------------------------------------------------
    def _run(self, signature, job, async_op, args=()):
        """Run job(*args) in call order: on this thread, or queued when asynchronous; record
        it in the flight recorder and turn a stuck wait into CollectiveTimeout."""
        if self._freed:
            self._check_usable(signature[0])
        self._sequence += 1
        sequence = self._sequence
        if async_op or self._executor.busy():
            description = f"{signature[0]} #{sequence}"
            work = self._executor.submit(lambda: self._call(sequence, signature, job, args), description)
            return work if async_op else work.wait()
        return self._executor.run(self._call, sequence, signature, job, args)

    def _call(self, sequence, signature, job, args):
        """job(*args) as collective number `sequence`: recorded by the flight recorder and
        the observers, its errors turned into the engine's (see _engine_error)."""
        flight, watchers = self._flight, self._watchers
        flight.start(sequence, signature)
        for observer in watchers:
            observer.call_started(sequence, signature)
        try:
            if self._reducer is None and not self.debug:
                self._transport.begin_call(sequence, signature)
                result = job(*args)
            else:
                result = self._observed(sequence, signature, job, args)
        except BaseException as exc:
            engine_error = self._failed(sequence, signature, exc, watchers)
            if engine_error is None:
                raise
            raise engine_error from exc
        flight.end()
        for observer in watchers:
            observer.call_ended(sequence, signature, None)
        return result

    def _failed(self, sequence, signature, exc, watchers):
        """Record that call `sequence` ended in exc (flight recorder, the observers that
        saw it start); returns the engine's error to raise instead, or None to raise exc."""
        self._flight.end(exc)
        for observer in watchers:
            observer.call_ended(sequence, signature, exc)
        return self._engine_error(exc)

    def _plain(self):
        """True when a call may take its plan's prepared form: no observer, not debug mode,
        not freed, and the executor would run it inline (nothing queued, no device order)."""
        return self._reducer is None and not self._watchers and not self.debug and not self._freed \
            and self._executor.runs_inline()

    def _run_prepared(self, plan, x, target):
        """plan.prepared(x, target) as the next collective, for a plain synchronous call
        (`_plain`): what _run and _call do for it (call order, flight record, call tags,
        errors turned into the engine's) in one frame, and "avg" finished as the job does.
        A small call's cost at 4 ranks on 2 cores is mostly the code it touches after each
        switch of a core between ranks: this path took 0.67-0.72 of the layered one for a
        one-shot call of 8 B and 0.79-0.86 at 64 KiB (interleaved, 2,000 calls a turn)."""
        self._sequence += 1
        sequence, signature = self._sequence, plan.signature
        self._flight.start(sequence, signature)
        try:
            self._transport.begin_call(sequence, signature)
            plan.prepared(x, target)
        except BaseException as exc:
            engine_error = self._failed(sequence, signature, exc, ())
            if engine_error is None:
                raise
            raise engine_error from exc
        self._flight.end()
        if target is not None:               # None: a rank that gets no result (reduce's non-roots)
            finish_avg(target, plan.op, self.size)
        return target

    def _observed(self, sequence, signature, job, args):
        """job(*args) after the debug-mode check, its reductions through the observers'."""
        if self._reducer is None:
            if self.debug:
                self._check_alike(sequence, signature)
            self._transport.begin_call(sequence, signature)   # after the debug exchange: it
            return job(*args)                                 # carries the last call's tag
        with reductions_through(self._reducer):
            if self.debug:
                self._check_alike(sequence, signature)
            self._transport.begin_call(sequence, signature)
            return job(*args)

    def _engine_error(self, exc):
        """The error to raise for a transport failure inside a collective (None: re-raise
        exc as it is): a stuck wait becomes CollectiveTimeout, a message the transport's
        library reported broken a TransportError with the flight summary."""
        if isinstance(exc, TransportTimeout):
            return self._timeout_error(self._flight.current, exc)
        if isinstance(exc, MessageError):
            return self._transport_error(self._flight.current, exc)
        if isinstance(exc, CollectiveMismatch) and exc.tags is not None:
            return self._mismatch_error(self._flight.current, exc)
        return None

    def _fault_summary(self, entry, peer):
        """Dump this rank's flight record and summarise every record that appears within
        a short grace period: (summary, where the records are)."""
        try:
            self._flight.dump(self.flight_dir)
            grace = min(5.0, max(0.5, (self.timeout or 0) / 2))
            records = read_records(self.flight_dir, self.size, wait=grace)
            summary = summarize(records, self.size, {"rank": self.rank, "seq": entry["seq"], "peer": peer})
            return summary, f"\nflight records: {self.flight_dir} (python -m collectives.flight DIR)"
        except OSError as error:
            return f"(flight records could not be written: {error})", ""

    def _timeout_error(self, entry, exc):
        """The CollectiveTimeout that names the stuck call, the step, the peer and, from
        the flight records, the ranks that never entered the call."""
        summary, where = self._fault_summary(entry, exc.peer)
        peer = "" if exc.peer is None else f" waiting to {exc.what} rank {exc.peer}"
        message = (f"rank {self.rank}: {entry['call']} #{entry['seq']} did not complete within "
                   f"{self.timeout:g} s; at step {exc.step} it was{peer or ' waiting'}.{where}\n{summary}")
        return CollectiveTimeout(message, collective=dict(entry), peer=exc.peer,
                                 step=exc.step, summary=summary)

    def _mismatch_error(self, entry, exc):
        """The CollectiveMismatch naming both calls, for one the transport found; recorded
        in the flight record, which is written so that ranks still waiting can name this one."""
        recent = [e["signature"] for e in self._flight.entries if e.get("signature")]
        exc = explain(exc, recent, self.size)
        self._flight.mark("mismatched", error=str(exc)[:500])
        try:
            self._flight.dump(self.flight_dir)
        except OSError:
            pass
        return exc

    def _transport_error(self, entry, exc):
        """A TransportError for a message failure the transport reported inside a
        collective (e.g. a message longer than expected: the ranks disagree on the count),
        with the flight summary."""
        summary, where = self._fault_summary(entry, None)
        message = (f"rank {self.rank}: {entry['call']} #{entry['seq']} failed at step "
                   f"{self.transport.step}: {exc} (typically a message longer than this rank "
                   f"expected: ranks passing different counts or calling collectives in a "
                   f"different order cause this, and debug mode names them){where}\n{summary}")
        return TransportError(message)

    def _check_alike(self, sequence, signature):
        """Debug mode: exchange call signatures and raise the same error on every rank if
        they differ, naming which ranks called what."""
        signatures = self.transport.allgather_object(signature)
        if all(s == signatures[0] for s in signatures):
            return
        groups = {}
        for rank, s in enumerate(signatures):
            groups.setdefault(s, []).append(rank)
        lines = [f"  ranks {ranks}: {describe(s)}" for s, ranks in groups.items()]
        raise CollectiveMismatch(f"collective #{sequence} was called differently across "
                                 f"ranks:\n" + "\n".join(lines))

    def _average_wide(self, source, dest, reduce_sum):
        """'avg' for 2-byte floats (see collectives.ops): source / size in float32,
        `reduce_sum(wide)` sums it over the ranks (returning where the sum is, or None for
        in place), and the result is rounded into `dest` (if not None)."""
        wide = self._workspace.get("avg-wide", source.size, source, dtype=np.float32)
        wide[...] = source
        np.true_divide(wide, self.size, out=wide)
        result = reduce_sum(wide)
        if dest is not None:
            dest[...] = wide if result is None else result

    # -- the collectives ----------------------------------------------------------------------
    def allreduce(self, x: Array, op: str = "sum", *, algorithm: str = "auto", out: Optional[Array] = None,
                  async_op: bool = False) -> Union[Array, Work]:
        """Reduce x element-wise over all ranks; every rank gets the result.

        Writes into `out` if given, else into x in place; returns that array (or a Work
        handle whose wait() returns it). Cost depends on the algorithm: see
        `collectives.algorithms` (ring: 2(n-1) steps, 2(n-1)/n of the buffer each way).
        """
        plan = None if async_op else self._repeated_prepared(x, ("allreduce", op, algorithm, out is None), out)
        if plan is not None:
            return self._run_prepared(plan, x, x if out is None else out)
        x, out = buffers.as_array(x), buffers.as_array(out)
        in_place = out is None
        plan = self._plans.get(x, ("allreduce", op, algorithm, in_place), self._plan_allreduce, op, algorithm, out)
        buffers.check_instance(x, plan.device, writeable=in_place, reduces=True)
        if not in_place:
            buffers.check_out(out, x, x.shape)
        target = x if in_place else out
        if plan.prepared is not None and not async_op and self._plain():
            return self._run_prepared(plan, x, target)
        return self._run(plan.signature, self._allreduce_job, async_op, (plan, x, target))

    def _repeated_prepared(self, x, key, out=None):
        """The plan a plain synchronous call on NumPy arrays made before under `key` (as
        given to Plans.get), if it has a prepared form and x and `out` pass every check
        the layered path makes of them (x C-contiguous, and writeable where the plan
        `writes_x`; `out` of x's dtype, of x's shape or the plan's `out_shape`,
        C-contiguous, writeable) and `_plain()`; else None, and the layered path runs,
        raising where something is wrong. One function instead of as_array, Plans.get,
        check_instance and check_out: at 4 ranks on 2 cores each costs microseconds in the
        code it touches after a switch of cores."""
        if type(x) is not np.ndarray or (out is not None and type(out) is not np.ndarray):
            return None
        plan = self._plans.known((np.ndarray, x.dtype, x.shape) + key)
        if plan is None or plan.prepared is None or not self._plain():
            return None
        flags = x.flags
        if not flags.c_contiguous or (plan.writes_x and not flags.writeable):
            return None
        if out is not None:
            flags, shape = out.flags, x.shape if plan.out_shape is None else plan.out_shape
            if out.dtype != x.dtype or out.shape != shape or not flags.c_contiguous or not flags.writeable:
                return None
        return plan

    def _plan_allreduce(self, x, op, algorithm, out):
        buffers.check_array(x, writeable=out is None, reduces=True)
        op = check_op(op, x.dtype)
        if out is not None:
            buffers.check_out(out, x, x.shape)
        device = buffers.is_device(x)
        name = self._resolve("allreduce", algorithm, x.nbytes, device=device)
        self._check_native_reduction(name, x.dtype)
        extra = wide_avg(op, x.dtype)
        prepared = None if device or extra else registry.prepare("allreduce", name, self._transport, x, combine_op(op))
        return Plan(("allreduce", x.size, buffers.dtype_name(x.dtype), op, name),
                    registry.ALGORITHMS["allreduce"][name], op, device, extra=extra, prepared=prepared,
                    writes_x=out is None)

    def _allreduce_job(self, plan, x, target):
        buf = buffers.flat(target)
        source = buf if target is x else buffers.flat(x)
        if plan.extra:                    # 'avg' of 2-byte floats: summed in float32
            self._average_wide(source, buf, lambda w: plan.run(self._route(x), w, w, SUM, self._workspace))
            return target
        plan.run(self._transport_for(plan, x), source, buf, combine_op(plan.op), self._workspace)
        finish_avg(buf, plan.op, self.size)   # 'avg': a sum, then one division where the sum is
        return target

    def reduce_scatter(self, x: Array, op: str = "sum", *, algorithm: str = "auto", out: Optional[Array] = None,
                       async_op: bool = False, counts: Optional[Sequence[int]] = None) -> Union[Array, Work]:
        """Reduce x over all ranks and return this rank's block of the result (1-D).

        Blocks follow `cc.partition(x.size, size)`, or `counts` (one element count per
        rank, adding up to x.size, the same on every rank). x is not modified. Cost
        (ring): n-1 steps, (n-1)/n of the buffer sent, received and reduced per rank.
        """
        key = ("reduce_scatter", op, algorithm, out is None)
        if counts is not None:
            counts = tuple(counts)
            key += (counts, tuple(map(type, counts)))
        plan = None if async_op else self._repeated_prepared(x, key, out)
        if plan is None:
            x, out = buffers.as_array(x), buffers.as_array(out)
            plan = self._plans.get(x, key, self._plan_reduce_scatter, op, algorithm, out, counts)
            buffers.check_instance(x, plan.device, reduces=True)
            if out is not None:
                buffers.check_out(out, x, plan.out_shape)
            if plan.prepared is None or async_op or not self._plain():
                return self._run(plan.signature, self._reduce_scatter_job, async_op, (plan, x, out))
        return self._run_prepared(plan, x, buffers.empty(plan.out_shape, x) if out is None else out)

    def _plan_reduce_scatter(self, x, op, algorithm, out, counts):
        buffers.check_array(x, reduces=True)
        op = check_op(op, x.dtype)
        if counts is None:
            offsets = partition(x.size, self.size)
        else:
            offsets = offsets_from_counts(counts, self.size, "counts", self.rank)
            if offsets[-1] != x.size:
                raise ValueError(f"rank {self.rank}: counts add up to {offsets[-1]} but x has "
                                 f"{x.size} elements")
        shape = (offsets[self.rank + 1] - offsets[self.rank],)
        if out is not None:
            buffers.check_out(out, x, shape)
        device = buffers.is_device(x)
        name = self._resolve("reduce_scatter", algorithm, x.nbytes, device=device)
        self._check_native_reduction(name, x.dtype)
        count = x.size if counts is None else tuple(b - a for a, b in zip(offsets, offsets[1:]))
        wide = wide_avg(op, x.dtype)
        prepared = None if device or wide else \
            registry.prepare("reduce_scatter", name, self._transport, x, combine_op(op), offsets)
        return Plan(("reduce_scatter", count, buffers.dtype_name(x.dtype), op, name),
                    registry.ALGORITHMS["reduce_scatter"][name], op, device,
                    extra=(offsets, wide), prepared=prepared, out_shape=shape)

    def _reduce_scatter_job(self, plan, x, out):
        offsets, wide = plan.extra
        result = buffers.empty(plan.out_shape, x) if out is None else out
        if wide:                          # 'avg' of 2-byte floats: summed in float32
            def reduce_wide(w):
                block = self._workspace.get("avg-wide-block", result.size, w)
                plan.run(self._route(x), w, block, SUM, offsets, self._workspace)
                return block
            self._average_wide(buffers.flat(x), result, reduce_wide)
            return result
        transport = self._transport_for(plan, x)
        plan.run(transport, buffers.flat(x), result, combine_op(plan.op), offsets, self._workspace)
        finish_avg(result, plan.op, self.size)
        return result

    def allgather(self, x: Array, *, algorithm: str = "auto", out: Optional[Array] = None,
                  async_op: bool = False) -> Union[Array, Work]:
        """Concatenate every rank's x along axis 0 (a 0-d x counts as shape (1,)).

        All ranks must pass the same shape. Returns `out` or a new array. Cost (ring):
        n-1 steps, (n-1)/n of the output received per rank.
        """
        key = ("allgather", algorithm, out is None)
        plan = None if async_op else self._repeated_prepared(x, key, out)
        if plan is None:
            x, out = buffers.as_array(x), buffers.as_array(out)
            plan = self._plans.get(x, key, self._plan_allgather, algorithm, out)
            buffers.check_instance(x, plan.device)
            if out is not None:
                buffers.check_out(out, x, plan.out_shape)
            if plan.prepared is None or async_op or not self._plain():
                return self._run(plan.signature, self._allgather_job, async_op, (plan, x, out))
        return self._run_prepared(plan, x, buffers.empty(plan.out_shape, x) if out is None else out)

    def _plan_allgather(self, x, algorithm, out):
        buffers.check_array(x)
        shape = (self.size * x.shape[0],) + tuple(x.shape[1:]) if x.ndim else (self.size,)
        if out is not None:
            buffers.check_out(out, x, shape)
        offsets = [i * x.size for i in range(self.size + 1)]
        device = buffers.is_device(x)
        name = self._resolve("allgather", algorithm, x.nbytes * self.size, device=device)
        prepared = None if device else registry.prepare("allgather", name, self._transport, x)
        return Plan(("allgather", tuple(x.shape), buffers.dtype_name(x.dtype), name),
                    registry.ALGORITHMS["allgather"][name], device=device, extra=offsets,
                    prepared=prepared, out_shape=shape)

    def _allgather_job(self, plan, x, out):
        offsets = plan.extra
        result = buffers.empty(plan.out_shape, x) if out is None else out
        buf = buffers.flat(result)
        buf[offsets[self.rank]:offsets[self.rank + 1]] = buffers.flat(x)
        plan.run(self._transport_for(plan, x), buf, offsets, self._workspace)
        return result

    def broadcast(self, x: Array, root: int = 0, *, algorithm: str = "auto",
                  async_op: bool = False) -> Union[Array, Work]:
        """Copy root's x into every rank's x, in place; returns x. Cost (tree): about
        log2(n) + chunks - 1 steps, each non-leaf sending the buffer to its children."""
        key = ("broadcast", root, type(root), algorithm)
        plan = None if async_op else self._repeated_prepared(x, key)
        if plan is None:
            x = buffers.as_array(x)
            plan = self._plans.get(x, key, self._plan_broadcast, root, algorithm)
            buffers.check_instance(x, plan.device, writeable=True)
            if plan.prepared is None or async_op or not self._plain():
                return self._run(plan.signature, self._broadcast_job, async_op, (plan, x))
        return self._run_prepared(plan, x, x)

    def _plan_broadcast(self, x, root, algorithm):
        buffers.check_array(x, writeable=True)
        root = self._check_root(root)
        device = buffers.is_device(x)
        name = self._resolve("broadcast", algorithm, x.nbytes, device=device)
        prepared = None if device else registry.prepare("broadcast", name, self._transport, x, root)
        return Plan(("broadcast", x.size, buffers.dtype_name(x.dtype), root, name),
                    registry.ALGORITHMS["broadcast"][name], device=device, extra=root, prepared=prepared,
                    writes_x=True)

    def _broadcast_job(self, plan, x):
        plan.run(self._transport_for(plan, x), buffers.flat(x), plan.extra, self._workspace)
        return x

    def reduce(self, x: Array, op: str = "sum", root: int = 0, *, algorithm: str = "auto",
               out: Optional[Array] = None, async_op: bool = False) -> Optional[Union[Array, Work]]:
        """Reduce x over all ranks into root only: into `out` there if given, else into
        root's x in place. Returns the result on root and None elsewhere; other ranks' x
        is not modified. Cost (tree): about log2(n) + chunks - 1 steps."""
        key = ("reduce", op, root, type(root), algorithm, out is None)
        plan = None if async_op else self._repeated_prepared(x, key, out)
        if plan is None:
            x, out = buffers.as_array(x), buffers.as_array(out)
            plan = self._plans.get(x, key, self._plan_reduce, op, root, algorithm, out)
            root, is_root, _ = plan.extra
            buffers.check_instance(x, plan.device, writeable=is_root and out is None, reduces=True)
            if out is not None and is_root:
                buffers.check_out(out, x, x.shape)
            if plan.prepared is None or async_op or not self._plain():
                return self._run(plan.signature, self._reduce_job, async_op, (plan, x, out))
        is_root = plan.extra[1]
        return self._run_prepared(plan, x, (x if out is None else out) if is_root else None)

    def _plan_reduce(self, x, op, root, algorithm, out):
        root = self._check_root(root)
        is_root = self.rank == root
        buffers.check_array(x, writeable=is_root and out is None, reduces=True)
        op = check_op(op, x.dtype)
        if out is not None and is_root:
            buffers.check_out(out, x, x.shape)
        device = buffers.is_device(x)
        name = self._resolve("reduce", algorithm, x.nbytes, device=device)
        self._check_native_reduction(name, x.dtype)
        wide = wide_avg(op, x.dtype)
        prepared = None if device or wide else \
            registry.prepare("reduce", name, self._transport, x, combine_op(op), root)
        return Plan(("reduce", x.size, buffers.dtype_name(x.dtype), op, root, name),
                    registry.ALGORITHMS["reduce"][name], op, device, extra=(root, is_root, wide),
                    prepared=prepared, writes_x=is_root and out is None)

    def _reduce_job(self, plan, x, out):
        root, is_root, wide = plan.extra
        if is_root:
            target = x if out is None else out
            work = buffers.flat(target)
        else:
            target, work = None, self._workspace.get("reduce", x.size, x)
        if not (is_root and out is None):
            work[...] = buffers.flat(x)
        if wide:                          # 'avg' of 2-byte floats: summed in float32
            self._average_wide(work, work if is_root else None,
                               lambda w: plan.run(self._route(x), w, SUM, root, self._workspace))
            return target
        plan.run(self._transport_for(plan, x), work, combine_op(plan.op), root,
                 self._workspace)
        if is_root:
            finish_avg(work, plan.op, self.size)
        return target

    def barrier(self, *, async_op: bool = False) -> Optional[Work]:
        """Return once every rank has entered the barrier (after this rank's queued work);
        with async_op, a Work whose wait() returns then. Cost: one barrier of the transport."""
        return self._run(("barrier",), self.transport.barrier, async_op=async_op)

    def allgather_object(self, obj: Any) -> list:
        """Every rank's picklable `obj`, in rank order, on every rank.

        Runs in call order like every collective (after this rank's queued asynchronous
        work), so it never mixes with their messages. For small control data: the cost is
        the transport's (MPI: two MPI all-gathers; in-process: n-1 messages each way).
        """
        return self._run(("allgather_object",), lambda: self.transport.allgather_object(obj), async_op=False)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Root's picklable `obj` on every rank (the others' `obj` is ignored), in call
        order like allgather_object; costs one allgather_object of root's object."""
        self._check_root(root)
        mine = obj if self.rank == root else None
        return self._run(("broadcast_object", root, "allgather_object"),
                         lambda: self.transport.allgather_object(mine)[root], async_op=False)

    def split(self, color: Optional[int], key: int = 0) -> Optional[Communicator]:
        """A new Communicator over the ranks that passed the same `color`, ranked by
        (key, old rank); color None leaves this rank out (returns None). Collective.
        Free the result with `free()` (or `with`) when done: each one holds an MPI
        communicator, and MPI runs out of them after a few thousand."""
        self._check_usable("split")
        self._executor.drain()
        sub = self._base.split(color, key)
        if sub is None:
            return None
        child = Communicator(sub, debug=self.debug, timeout=self.timeout,
                             flight_dir=os.path.join(self.flight_dir, f"split{self._sequence}-{color}"))
        self._children.add(child)
        return child


def _release(executor, transport, workspace, point_to_point=None, freed_by_call=(True,)):
    """What a Communicator hands back, once: its thread, its transports, its workspaces.
    freed_by_call[0]: free() was called (on every rank alike), rather than garbage
    collection running on this rank alone: only then may the transports wait for peers."""
    together = bool(freed_by_call[0])
    executor.close(wait=True)
    transport.free(together)
    if point_to_point is not None:
        point_to_point.free(together)
    workspace.clear()
