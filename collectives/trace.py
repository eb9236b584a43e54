"""Traces: what every rank of a collective did, step by step, in Chrome's trace-event format.

    from collectives import trace
    with trace.tracing(comm) as recorder:            # observes comm while inside
        with recorder.span("allreduce ring", x=x):   # optional: a parent event per call
            comm.allreduce(x, algorithm="ring")
    events = trace.gather(comm, recorder)            # every rank's events, on rank 0
    if comm.rank == 0:
        trace.write_chrome("out.json", events)       # open in ui.perfetto.dev or chrome://tracing

An event is one step of one rank: a sendrecv, a send or receive completed by wait(), or a
reduction, with its peer(s), bytes, the chunk (the buffer and element range, e.g.
"x[512:1024]"; registered buffers by name, others "scratch"), the op, and its start and end
(seconds). In the Chrome file each rank is one track (pid = tid = rank) of "X" (complete)
events with ts and dur in microseconds.

Tracing is off unless asked for: `enable` adds a `Tracer` to the communicator's observers
(collectives.observe), which wraps the transport its collectives run on in a
`TracingTransport` and sees every reduction of its collectives; a communicator without
observers pays nothing. The simulator (collectives.simulation) records the same events on
its virtual clock.
"""
import json
import time
from contextlib import contextmanager

from .observe import Observer
from .transport.wrapper import TransportWrapper


# -- recording -----------------------------------------------------------------------------------
def _address(array):
    interface = getattr(array, "__array_interface__", None)
    return interface["data"][0] if interface is not None else array.data.ptr   # NumPy, else CuPy


def _owner(array):
    while getattr(array, "base", None) is not None and hasattr(array.base, "dtype"):
        array = array.base
    return array


class Recorder:
    """One rank's events. `clock()` gives seconds (wall clock by default; the simulator
    passes its virtual one); keep_data=True also keeps a copy of every message and
    reduction result (for bench.explain), which the Chrome file leaves out."""

    def __init__(self, rank, clock=time.perf_counter, keep_data=False):
        self.rank, self.clock, self.keep_data = rank, clock, keep_data
        self.events = []
        self.enabled = True
        # perf_counter has an arbitrary origin per process: this maps it onto wall time
        self.origin = time.time() - time.perf_counter() if clock is time.perf_counter else 0.0
        self._names = {}

    def name_buffers(self, **arrays):
        """Name the buffers chunks are reported in, e.g. name_buffers(x=x, out=out)."""
        for name, array in arrays.items():
            if array is not None:
                owner = _owner(array)
                self._names[id(owner)] = (name, owner)   # keeps owner alive: ids stay unique

    def chunk(self, buf):
        """"name[start:stop]": which buffer, and which elements of it, `buf` is."""
        owner = _owner(buf)
        name = self._names.get(id(owner), ("scratch",))[0]
        start = (_address(buf) - _address(owner)) // max(buf.itemsize, 1)
        return f"{name}[{start}:{start + buf.size}]"

    def add(self, name, cat, start, end, args, data=None):
        event = {"rank": self.rank, "name": name, "cat": cat, "start": start, "end": end, "args": args}
        if data is not None:
            event["data"] = data
        self.events.append(event)
        return event

    def message(self, start, end, send=None, recv=None, sent=None, **extra):
        """Record a step that sent send=(buf, dest) and/or received recv=(buf, source);
        `sent` is the data sent as it was when posted, if buf may have changed since."""
        args, data, parts = {}, {}, []
        for side, pair, arrow in (("send", send, "->"), ("recv", recv, "<-")):
            if pair is None or pair[0] is None:
                continue
            buf, peer = pair
            parts.append(f"{arrow}{peer}")
            args.update({f"{side}_peer": peer, f"{side}_bytes": int(buf.nbytes),
                         f"{side}_chunk": self.chunk(buf)})
            if self.keep_data:
                data[side] = sent if side == "send" and sent is not None else buf.copy()
        if len(parts) == 1:                  # one direction: plain peer/bytes/chunk keys too
            side = "send" if send is not None and send[0] is not None else "recv"
            args.update(peer=args[f"{side}_peer"], bytes=args[f"{side}_bytes"], chunk=args[f"{side}_chunk"])
            cat = side
        else:
            cat = "sendrecv"
        args.update(extra)
        return self.add(f"{cat} {' '.join(parts)}", cat, start, end, args, data if self.keep_data else None)

    def reduction(self, start, end, dst, src, op):
        """Record dst = dst <op> src (after it happened)."""
        args = {"op": op, "bytes": int(dst.nbytes), "chunk": self.chunk(dst), "operand": self.chunk(src)}
        return self.add(f"reduce {op}", "reduce", start, end, args,
                        {"result": dst.copy()} if self.keep_data else None)

    def segment_pass(self, start, end, buf, owner):
        """Record a pass over `buf`, a slot of rank `owner`'s part of the shared segment:
        a read from a peer (data: what it read, like a received message's), or a pass over
        this rank's own slot (publishing into it, or reading its own operand)."""
        args = {"peer": owner, "bytes": int(buf.nbytes), "chunk": self.chunk(buf), "via": "shared segment"}
        if owner == self.rank:
            return self.add("shm own slot", "shm", start, end, args)
        args.update(recv_peer=owner, recv_bytes=args["bytes"], recv_chunk=args["chunk"], arrived=end)
        return self.add(f"shm read <-{owner}", "shm", start, end, args,
                        {"recv": buf.copy()} if self.keep_data else None)

    def segment_sync(self, start, end, value):
        """Record a shared-memory sync point: posted at `start`, every peer's flag seen at
        `end`; value: the flag counter."""
        return self.add(f"shm sync {value}", "shm", start, end, {"flag": int(value)})

    @contextmanager
    def span(self, name, **buffers):
        """A parent event around what happens inside (e.g. one collective call); keyword
        arrays are registered as named buffers first."""
        self.name_buffers(**buffers)
        start = self.clock()
        try:
            yield
        finally:
            self.add(name, "call", start, self.clock(), {})


# -- the tracing transport ---------------------------------------------------------------------
class _TracedRequest:
    __slots__ = ("tracer", "inner", "side", "buf", "peer", "posted", "copy")

    def __init__(self, tracer, inner, side, buf, peer):
        self.tracer, self.inner, self.side, self.buf, self.peer = tracer, inner, side, buf, peer
        self.posted = tracer.recorder.clock()
        # a send's data as it was posted (the buffer may be reused once the send completes)
        self.copy = buf.copy() if side == "send" and buf is not None and tracer.recorder.keep_data else None

    def wait(self):
        recorder = self.tracer.recorder
        start = recorder.clock()
        result = self.inner.wait()
        if recorder.enabled and self.buf is not None:
            recorder.message(start, recorder.clock(), **{self.side: (self.buf, self.peer)},
                             sent=self.copy, posted_us=round((start - self.posted) * 1e6, 3))
        return result

    def test(self):
        return self.inner.test()


class TracedSegment:
    """A shared segment (collectives/transport/segment.py) whose views and sync points are
    recorded: each view of a slot as a pass over it (`Recorder.segment_pass`: a read from
    the peer that owns it, with the data when kept, or a pass over this rank's own slot),
    taken when the algorithm asks for the view (the copy or reduction follows; a reduction
    is its own event), and each sync point from its post to the moment every peer's flag
    was seen. Everything else is the wrapped segment's."""
    bindable = False          # every view is recorded when taken

    def __init__(self, inner, recorder):
        self.inner, self.recorder = inner, recorder
        self._posted, self._seen = 0.0, set()

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _viewed(self, view, rank):
        if self.recorder.enabled:
            now = self.recorder.clock()
            self.recorder.segment_pass(now, now, view, self.inner.members[rank])
        return view

    def staging(self, rank, *args, **kwargs):
        return self._viewed(self.inner.staging(rank, *args, **kwargs), rank)

    def published(self, rank, *args, **kwargs):
        return self._viewed(self.inner.published(rank, *args, **kwargs), rank)

    def staging_all(self, parity, dtype, count):
        return [self.staging(j, parity, dtype, count) for j in range(self.inner.size)]   # each one recorded

    def post(self, offset=0):
        self._posted, self._seen = self.recorder.clock(), {self.inner.rank}
        return self.inner.post(offset)

    def wait_all(self, timeout):
        offsets = self.inner.wait_all(timeout)
        self._saw(range(self.inner.size))
        return offsets

    def wait_for(self, peer, timeout):
        offset = self.inner.wait_for(peer, timeout)
        self._saw([peer])
        return offset

    def _saw(self, peers):
        """The sync point ends (one event) when every peer's flag has been seen."""
        complete = len(self._seen) == self.inner.size
        self._seen.update(peers)
        if self.recorder.enabled and not complete and len(self._seen) == self.inner.size:
            self.recorder.segment_sync(self._posted, self.recorder.clock(), self.inner.syncs)


class TracingTransport(TransportWrapper):
    """A transport that records every step of the transport it wraps (see module
    docstring), its shared segment's included (TracedSegment). Everything it does not
    define (timeout, step, ranks_per_node, ...) is the wrapped transport's; MPI's native_*
    collectives are recorded as one event per call."""

    def __init__(self, inner, recorder):
        super().__init__(inner)
        self.recorder = recorder
        self._segment = self._capabilities = None

    @property
    def capabilities(self):
        """The wrapped transport's, its shared segment traced (made once per segment)."""
        inner = self.inner.capabilities
        segment = inner.shared_segment
        if segment is None:
            return inner
        if self._segment is None or self._segment.inner is not segment or self._capabilities[0] is not inner:
            self._segment = TracedSegment(segment, self.recorder)
            self._capabilities = (inner, inner.replace(shared_segment=self._segment))
        return self._capabilities[1]

    def rewrap(self, inner):
        return TracingTransport(inner, self.recorder)

    def __getattr__(self, name):
        value = super().__getattr__(name)
        if name.startswith("native_"):          # MPI's own collective: one event for the call
            return self._native(name, value)
        return value

    def _native(self, name, function):
        def traced(buf, *args):
            recorder = self.recorder
            start = recorder.clock()
            result = function(buf, *args)
            if recorder.enabled:
                recorder.add(name.replace("native_", "MPI "), "native", start, recorder.clock(),
                             {"bytes": int(buf.nbytes), "chunk": recorder.chunk(buf)})
            return result
        return traced

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        recorder = self.recorder
        start = recorder.clock()
        self.inner.sendrecv(sendbuf, dest, recvbuf, source)
        if recorder.enabled:
            recorder.message(start, recorder.clock(), send=(sendbuf, dest), recv=(recvbuf, source))

    def isend(self, buf, dest):
        return _TracedRequest(self, self.inner.isend(buf, dest), "send", buf, dest)

    def irecv(self, buf, source):
        return _TracedRequest(self, self.inner.irecv(buf, source), "recv", buf, source)

    def waitall(self, requests):
        for request in requests:          # one event per request, in order
            request.wait()



class Tracer(Observer):
    """The observer `enable` adds: records every message (through TracingTransport) and
    every reduction of the communicator's collectives into `recorder`."""
    watches_reductions = True

    def __init__(self, recorder):
        self.recorder = recorder

    def wrap(self, transport):
        return TracingTransport(transport, self.recorder)

    def reduce(self, dst, src, op, reverse, inner):
        recorder = self.recorder
        start = recorder.clock()
        inner(dst, src, op, reverse)
        if recorder.enabled:
            recorder.reduction(start, recorder.clock(), dst, src, op)
        return dst


def _tracer(comm):
    return next((o for o in comm.observers if isinstance(o, Tracer)), None)


def enable(comm, keep_data=False):
    """Start tracing `comm` (adds a Tracer to its observers); returns this rank's Recorder."""
    if _tracer(comm) is not None:
        raise ValueError("this communicator is already traced: call trace.disable(comm) first")
    recorder = Recorder(comm.rank, keep_data=keep_data)
    comm.add_observer(Tracer(recorder))
    return recorder


def disable(comm):
    """Stop tracing `comm`; returns its Recorder (events stay in recorder.events)."""
    tracer = _tracer(comm)
    if tracer is None:
        raise ValueError("this communicator is not traced (trace.enable(comm) starts tracing)")
    tracer.recorder.enabled = False
    comm.remove_observer(tracer)
    return tracer.recorder


@contextmanager
def tracing(comm, keep_data=False):
    """Trace `comm` while inside; yields this rank's Recorder."""
    recorder = enable(comm, keep_data)
    try:
        yield recorder
    finally:
        disable(comm)


# -- output ----------------------------------------------------------------------------------------
def portable(events, origin=0.0):
    """Events without kept data, times shifted by `origin` (to compare across processes)."""
    return [{key: (value + origin if key in ("start", "end") else value)
             for key, value in event.items() if key != "data"} for event in events]


def gather(comm, recorder):
    """Every rank's events (collective call): the full list on rank 0, None elsewhere."""
    everything = comm.allgather_object(portable(recorder.events, recorder.origin))
    return [event for events in everything for event in events] if comm.rank == 0 else None


def chrome(events, metadata=None):
    """The Chrome trace-event JSON object for `events`: one track per rank, "X" events
    with ts/dur in microseconds from the earliest event."""
    t0 = min((e["start"] for e in events), default=0.0)
    ranks = sorted({e["rank"] for e in events})
    out = []
    for rank in ranks:
        for kind in ("process_name", "thread_name"):
            out.append({"name": kind, "ph": "M", "pid": rank, "tid": rank, "args": {"name": f"rank {rank}"}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": rank, "tid": rank,
                    "args": {"sort_index": rank}})
    for e in events:
        out.append({"name": e["name"], "cat": e["cat"], "ph": "X", "pid": e["rank"], "tid": e["rank"],
                    "ts": round((e["start"] - t0) * 1e6, 3),
                    "dur": round(max(e["end"] - e["start"], 0.0) * 1e6, 3), "args": e["args"]})
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": metadata or {}}


def write_chrome(path, events, metadata=None):
    """Write `events` to `path` as a Chrome trace (see `chrome`); returns the path."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(chrome(events, metadata), handle)
    return path
