"""The in-process transport: one thread per rank, messages handed over in memory.

Used by the tests to run every algorithm at any world size without mpirun, and by the
teaching tools. Sends have rendezvous semantics (a send completes only when the receiver
has taken the data, like MPI_Ssend), so a schedule that would deadlock over MPI deadlocks
here too, and the receive timeout turns that into an error instead of a hang.
"""
import threading
from collections import defaultdict

import numpy as np

from ..errors import CollectiveTimeout, TransportError, TransportTimeout
from .calls import CallTags, TaggedCallState
from .channels import Channel
from .contract import NO_CAPABILITIES
from .segment import DEFAULT_BYTES, LocalSegment

DEFAULT_TIMEOUT = 60.0


class _Message:
    __slots__ = ("payload", "tag", "done", "error")

    def __init__(self, payload, tag):
        self.payload, self.tag = payload, tag
        self.done = threading.Event()
        self.error = None


class Fabric:
    """Shared state of one in-process world: every channel of every group."""

    def __init__(self, timeout=DEFAULT_TIMEOUT, shm_bytes=DEFAULT_BYTES):
        self.timeout = timeout
        self.cond = threading.Condition()
        self.channels = defaultdict(Channel)   # (group, source, dest) -> Channel
        self.aborted = None  # set to a reason when a rank failed: the others stop waiting
        self.shm_bytes = shm_bytes
        self._segments = {}  # group -> [every rank's region of its segment, ranks that freed it]

    def segment(self, group, rank, size, members=None):
        """Rank `rank`'s handle on group's shared segment (None when shm_bytes is 0);
        `members`: the transport ranks of the segment's ranks (default 0..size-1)."""
        if not self.shm_bytes:
            return None
        with self.cond:
            entry = self._segments.get(group)
            if entry is None:
                entry = self._segments[group] = [LocalSegment.create(size, self.shm_bytes), 0]
        return LocalSegment(entry[0], rank, aborted=lambda: self.aborted, members=members)

    def release_segment(self, group):
        """One rank of `group` is done with its segment; the last one drops it."""
        with self.cond:
            entry = self._segments.get(group)
            if entry is not None:
                entry[1] += 1
                if entry[1] == len(entry[0]):
                    del self._segments[group]

    def abort(self, reason):
        with self.cond:
            self.aborted = reason
            self.cond.notify_all()

    def _check_aborted(self, describe):
        if self.aborted:
            raise TransportError(f"{describe()}: gave up because {self.aborted}")

    @staticmethod
    def _timed_out(text, endpoint, peer, what, timeout):
        return TransportTimeout(f"{text} after {timeout:g} s", peer=peer, what=what,
                                waited=timeout, step=endpoint.step)

    def forget(self, group, rank):
        """Drop the channels into `rank` of `group` (its receives are over: it was freed)."""
        with self.cond:
            for key in [k for k in self.channels if k[0] == group and k[2] == rank]:
                del self.channels[key]

    def post_send(self, key, payload, tag):
        message = _Message(payload, tag)
        with self.cond:
            self.channels[key].put(message)
            self.cond.notify_all()
        return message

    def post_recv(self, key):
        with self.cond:
            return self.channels[key].post()

    def take(self, key, ticket, describe, endpoint, peer):
        timeout = endpoint.timeout
        with self.cond:
            channel = self.channels[key]
            if not self.cond.wait_for(lambda: channel.has(ticket) or self.aborted,
                                      timeout or None):
                raise self._timed_out(f"{describe()}: no message (the peer never sent it: a "
                                      "deadlock or a skipped call)", endpoint, peer,
                                      "receive from", timeout)
            if not channel.has(ticket):
                self._check_aborted(describe)
            return channel.take(ticket)

    def wait_delivered(self, message, describe, endpoint, peer):
        """Block until `message` was received (polling for an abort every 50 ms)."""
        waited, timeout = 0.0, endpoint.timeout
        while not message.done.wait(0.05):
            waited += 0.05
            self._check_aborted(describe)
            if timeout and waited >= timeout:
                raise self._timed_out(f"{describe()}: not received", endpoint, peer, "send to", timeout)
        if message.error:
            raise TransportError(message.error)


class _SendRequest:
    __slots__ = ("endpoint", "message", "dest")

    def __init__(self, endpoint, message, dest):
        self.endpoint, self.message, self.dest = endpoint, message, dest

    def wait(self):
        endpoint = self.endpoint
        endpoint.step += 1
        endpoint.fabric.wait_delivered(
            self.message, lambda: f"rank {endpoint.rank} sending to rank {self.dest}",
            endpoint, self.dest)

    def test(self):
        return self.message.done.is_set()


class _RecvRequest:
    __slots__ = ("transport", "buf", "source", "ticket", "done")

    def __init__(self, transport, buf, source, ticket):
        self.transport, self.buf, self.source, self.ticket = transport, buf, source, ticket
        self.done = False

    def wait(self):
        """Complete the receive; returns the object for an object message."""
        if not self.done:
            self.done = True
            return self.transport._complete_recv(self.buf, self.source, self.ticket)

    def test(self):
        return self.done


class LocalTransport(TaggedCallState):
    """One rank's endpoint in an in-process world (see module docstring). It declares
    `capabilities` as given (default: none; tests pass ranks_per_node), plus the group's
    shared segment where the fabric makes them (all in-process ranks share memory).

    node_size: the world's ranks form emulated nodes of that many consecutive ranks, each
    with its own segment. node: the emulated node this rank is on (a group split from
    another passes it on); shared=False: no segment (a split whose ranks span several
    nodes, like a communicator across machines)."""

    def __init__(self, fabric, group, rank, size, capabilities=NO_CAPABILITIES, node_size=None, node=0,
                 shared=True):
        self.fabric, self.group, self.rank, self.size = fabric, group, rank, size
        self.node = rank // node_size if node_size else node
        self._segment_group = group if node_size is None else (group, "node", rank // node_size)
        g = node_size or size
        segment = None if not shared else fabric.segment(
            self._segment_group, rank % g, g, range(rank - rank % g, rank - rank % g + g))
        self.capabilities = capabilities.replace(shared_segment=segment) if segment else capabilities
        self.set_timeout(fabric.timeout)
        self.tags = CallTags()          # the call in progress: its tag goes with every message
        self._splits = 0

    # -- point to point ----------------------------------------------------------------
    def isend(self, buf, dest, payload=None):
        """Start sending `buf` to `dest`; the request completes once `dest` has received it."""
        message = self.fabric.post_send((self.group, self.rank, dest),
                                        buf if payload is None else payload, self.tags.tag)
        return _SendRequest(self, message, dest)

    def irecv(self, buf, source):
        """Post a receive of `buf` from `source`; matched in posting order."""
        return _RecvRequest(self, buf, source, self.fabric.post_recv((self.group, source, self.rank)))

    def _complete_recv(self, buf, source, ticket):
        self.step += 1
        message = self.fabric.take((self.group, source, self.rank), ticket,
                                   lambda: f"rank {self.rank} receiving from rank {source}",
                                   self, source)
        if message.tag != self.tags.tag:     # sent in another call: matched, not used
            message.done.set()
            raise self.tags.mismatch(self.rank, source, message.tag)
        data = message.payload
        if buf is None:                      # an object message (control plane)
            message.done.set()
            return data
        if data.nbytes != buf.nbytes:
            message.error = (f"rank {source} sent {data.nbytes} bytes to rank {self.rank}, "
                             f"which expected {buf.nbytes}")
            message.done.set()
            raise TransportError(message.error)
        else:
            np.copyto(buf, data.view(buf.dtype).reshape(buf.shape), casting="no")
        message.done.set()

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        """Send `sendbuf` to `dest` and receive `recvbuf` from `source` (either may be None)."""
        send = self.isend(sendbuf, dest) if sendbuf is not None else None
        if recvbuf is not None:
            self.irecv(recvbuf, source).wait()
        if send is not None:
            send.wait()

    @staticmethod
    def waitall(requests):
        """Wait for every request in `requests`."""
        for request in requests:
            request.wait()

    # -- control plane -------------------------------------------------------------------
    def allgather_object(self, obj):
        """Every rank's `obj`, in rank order (n-1 messages each way per rank)."""
        sends = [self.isend(None, peer, payload=obj) for peer in range(self.size) if peer != self.rank]
        result = []
        for peer in range(self.size):
            if peer == self.rank:
                result.append(obj)
            else:
                result.append(self.irecv(None, peer).wait())
        self.waitall(sends)
        return result

    def barrier(self):
        """Return once every rank of the group has entered the barrier."""
        self.allgather_object(None)

    def free(self, together=True):
        """Forget this endpoint's incoming channels (the sender side completed already)
        and let go of the group's shared segment."""
        self.fabric.forget(self.group, self.rank)
        segment = self.capabilities.shared_segment
        if segment is not None and not segment.closed:
            segment.close()
            self.fabric.release_segment(self._segment_group)

    def split(self, color, key=0, segment=True):
        """A transport over the ranks that passed the same `color` (None: this rank joins
        none), with a shared segment of its own where they all are on one (emulated) node
        (and `segment`)."""
        entries = self.allgather_object((color, key, self.rank, self.node))
        self._splits += 1
        if color is None:
            return None
        members = sorted((k, r) for c, k, r, _ in entries if c == color)
        nodes = {node for c, _, _, node in entries if c == color}
        new_rank = members.index((key, self.rank))
        group = (self.group, self._splits, color)
        sub = LocalTransport(self.fabric, group, new_rank, len(members), node=self.node,
                             shared=segment and len(nodes) == 1)
        sub.set_timeout(self.timeout)
        return sub


def run_threads(size, fn, *args, timeout=DEFAULT_TIMEOUT, wrap=None, release=None,
                capabilities=NO_CAPABILITIES, shm_bytes=DEFAULT_BYTES, node_size=None, **kwargs):
    """Run fn(endpoint, *args, **kwargs) on `size` in-process ranks, one thread each.

    Every group of ranks gets a shared segment of `shm_bytes` per rank (0: none); with
    `node_size`, the world's ranks get one per emulated node of that many ranks instead.

    Every endpoint declares `capabilities` (e.g. Capabilities(ranks_per_node=2) to test
    the hierarchical algorithm). `wrap(transport)` turns each rank's transport into what
    fn receives (the Communicator does this); by default fn gets the bare transport.
    `release(obj)` is called on what fn received once fn has ended, after a failing rank
    has aborted the others' waits, so it may wait for the rank's outstanding work (the
    Communicator's free() does). Returns the list of results in rank order; the first
    exception raised by any rank is re-raised here, after all threads end.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    fabric = Fabric(timeout, shm_bytes)
    results, errors = [None] * size, [None] * size

    def fail(rank, exc):
        if errors[rank] is None:
            errors[rank] = exc
        fabric.abort(f"rank {rank} failed with {type(exc).__name__}: {exc}")

    def body(rank):
        endpoint = None
        try:
            endpoint = LocalTransport(fabric, "world", rank, size, capabilities, node_size)
            endpoint = wrap(endpoint) if wrap else endpoint
            results[rank] = fn(endpoint, *args, **kwargs)
        except BaseException as exc:  # reported to the caller below
            fail(rank, exc)
        if release is not None and endpoint is not None:
            try:
                release(endpoint)
            except BaseException as exc:
                fail(rank, exc)

    threads = [threading.Thread(target=body, args=(r,), name=f"rank-{r}", daemon=True)
               for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Prefer a root cause over the timeouts and "gave up because rank r failed" it caused.
    def consequence(exc):
        return 2 if isinstance(exc, TransportError) else 1 if isinstance(exc, CollectiveTimeout) else 0
    failed = sorted((consequence(exc), rank) for rank, exc in enumerate(errors) if exc is not None)
    if failed:
        raise errors[failed[0][1]]
    return results
