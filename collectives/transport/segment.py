"""The shared segment: ranks on one node read each other's memory directly.

Every rank owns one region of the segment, laid out as
    [ header: one 64-byte flag line, padded | staging, parity 0 | staging, parity 1 | heap ]
(the staging halves start half a page in: see STAGING_SHIFT)
and every rank sees every region as NumPy views (`region(j)`). Over MPI the segment is an
MPI-3 shared window (`MPI.Win.Allocate_shared` over the node's ranks: MPI maps it into
every process and unlinks its file at once, so nothing stays in /dev/shm); in process it
is one plain array per rank (`LocalSegment`). Algorithms (collectives/algorithms/shm.py)
only use the methods below and never know which one they have.

Flags. A rank's flag line holds a counter and, per parity of the counter, the sequence
number and signature hash of the call being made and the offset of the data it
publishes. `post()` writes the fields, fences, then raises the counter by one; `wait_all()`
waits (through the bounded wait of collectives/transport/waiting.py, so a dead or stalled
peer ends in TransportTimeout naming it) until every peer's counter reaches ours, fences,
and checks the peer is in the same call (else CollectiveMismatch naming it). Counters only
ever grow: a sync point is "counter value s", the same on every rank because every rank
runs the same schedule.

Why a rank never overwrites data a peer has not read yet. Every sync point is a post
followed by a wait for ALL peers before the next post (all at once, `wait_all`, or one
at a time as their data are needed, `wait_for`), so no rank gets more than
one sync point ahead of the slowest: a peer's slot for sync s (parity s % 2) is still
intact while anyone may read it.
Staging data use the parity of the *round* (`begin_round()`; one round per pipeline chunk
or call), and every round starts with such a sync. A rank reads a round's data before it
posts the first sync of the next round; so before rank r writes round k's staging (parity
k % 2), it has passed the first sync of round k-1, which every peer posted only after
finishing its reads of round k-2, the last round that used that parity. Data in the heap
(arrays from `comm.empty`, published in place) are read by peers only before a sync that
ends the call (two-shot's second; one-shot adds one when any rank published from its heap),
so a call returns only when no peer reads this rank's buffers any more.

Memory ordering. MPI: `Win.Sync()` is the fence, taken after writing data and before
raising the counter, and after seeing a counter and before reading data (inside a
`Lock_all` epoch opened at allocation). In process: the writer's data stores happen
before its counter store in program order, and the reader sees the counter only after
acquiring the GIL the writer released since; a release/acquire pair orders them, so the
data are visible before the reader looks at them.
"""
import threading
import weakref

import numpy as np

from ..errors import CollectiveMismatch, TransportError
from .calls import signature_hash
from .waiting import poll_until, quick_polls, spin_briefly, yield_core

LINE = 64                      # bytes of one flag line (one cache line)
PAGE = 4096
HEADER = PAGE                  # the flag line padded to a page
ALIGN = 64
# Staging halves start this far into a page, both at the same page offset (they are
# whole pages), in every segment with room for a page per half after the shift. A copy
# whose destination lies 1-63 bytes past its source's offset within a page stalls: each
# load looks as if it depended on a store still in flight ("4K aliasing"). NumPy's large
# arrays start 16 bytes into a page, so staging at the page start made every other
# two-shot call of 1 MiB (the parity-0 half) 3.5x slower on the 2-core test machine (4
# ranks; staging 0 bytes into a page: 2287 us a call, 16 B to 3.5 KiB in: 614-692 us,
# one interleaved run). Half a page in is as far as staging can be from the offsets
# arrays usually have.
STAGING_SHIFT = 2048
# Per rank by default: the flag page, two staging halves of 16 MiB and a heap of a little
# over 32 MiB. With exactly 64 MiB the halves came to 16 MiB - 4 KiB, so a 16 MiB buffer
# took a second round of 4 KiB with all its sync points: 4 ranks on 2 cores, 16 MiB,
# alternating (three runs), shm_ring 0.87-0.92 and oneshot 0.91-0.95 of the time with the
# halves at 16 MiB, twoshot (8 MiB rounds either way) 0.97-1.04.
DEFAULT_BYTES = (64 << 20) + (16 << 10)
VIEWS_KEPT = 256               # cached staging views (rank, parity, dtype, count, start) before starting over
# int64 fields of a flag line: counter, then (seq, hash, offset) for parity 0 and 1
COUNTER, SLOT0, SLOT_FIELDS = 0, 1, 3


SHM_ENV = "COLLECTIVES_SHM_BYTES"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def check_shm_bytes(value):
    """Bytes of segment per rank from an int or a text like '64M' (0: no segment)."""
    if isinstance(value, str):
        text = value.strip().upper().rstrip("B")
        unit = text[-1] if text and text[-1] in _UNITS else ""
        try:
            value = int(float(text[:len(text) - len(unit)]) * _UNITS[unit])
        except ValueError:
            raise ValueError(f"shm_bytes must be a byte count like 67108864 or '64M', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"shm_bytes must be a non-negative int (bytes per rank; 0 disables), got {value!r}")
    return value


def shm_bytes_from_env(default=DEFAULT_BYTES):
    """Segment bytes per rank from COLLECTIVES_SHM_BYTES (e.g. '64M'; 0 disables), else default."""
    import os
    text = os.environ.get(SHM_ENV, "").strip()
    return check_shm_bytes(text) if text else default


def emulated_node_size(size, nodes=None):
    """Ranks per emulated node when `nodes` (default: COLLECTIVES_NODES) asks to split `size`
    ranks into that many nodes of consecutive ranks; None when not asked."""
    import os
    if nodes is None:
        text = os.environ.get("COLLECTIVES_NODES", "").strip()
        if not text:
            return None
        nodes = int(text) if text.isdigit() else text
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1 or size % nodes:
        raise ValueError(f"nodes must be a positive int dividing the {size} ranks, got {nodes!r}")
    return size // nodes


def layout(nbytes, page_offset=0):
    """(where staging starts, staging bytes per parity, heap offset) of a region of
    `nbytes` (header included) that starts `page_offset` bytes into a page: two staging
    halves of a quarter of the rest each, then the heap. Where each half can hold a page
    after the shift, the halves are whole pages starting STAGING_SHIFT into a page; in
    smaller segments (tests' tiny ones) they start right after the header, 64-byte
    aligned. Cost: a few integer operations."""
    usable = max(0, nbytes - HEADER)
    shift = (STAGING_SHIFT - page_offset) % PAGE
    if (usable - shift) // 4 >= PAGE:
        start, half = HEADER + shift, (usable - shift) // 4 // PAGE * PAGE
    else:
        start, half = HEADER, usable // 4 // ALIGN * ALIGN
    return start, half, start + 2 * half


class Segment:
    """One rank's handle on its node's shared segment (see module docstring).

    rank, size: this rank's place among the segment's ranks. `regions[j]` is rank j's
    region as a uint8 array; subclasses supply it and `fence()`. `aborted()`, if given,
    returns why the world gave up (a rank failed) or None: waits stop early on it.
    """

    # Views may be kept across calls (a prepared algorithm binds them once); a segment that
    # accounts for every view it hands out (simulated, traced) says False.
    bindable = True

    def __init__(self, regions, rank, aborted=None, members=None):
        self.regions, self.rank, self.size = regions, rank, len(regions)
        self.members = list(range(self.size)) if members is None else list(members)   # transport ranks
        self._tags = None
        self._aborted = aborted
        self.nbytes = regions[rank].size
        # region 0's page offset is the same in every process (mappings are whole pages)
        self._staging_start, self.staging_bytes, self.heap_offset = layout(self.nbytes, regions[0].ctypes.data % PAGE)
        self._lines = [memoryview(r[:LINE]).cast("q") for r in regions]
        self._line = self._lines[rank]
        self._counter = self._line[COUNTER]
        self._round = 0
        self._call = (0, 0)
        self._call_start = 0
        self._hashes = {}
        self._views = {}
        self.heap = Heap(self.nbytes - self.heap_offset)
        self.closed = False

    # -- what algorithms use ----------------------------------------------------------
    def begin_call(self, sequence, signature, tags=None):
        """Record the call the next sync points belong to (carried in every flag): with the
        transport's CallTags (collectives.transport.calls, already begun for this call), its
        call tag, so a mismatch is reported exactly like one found on a message."""
        self._tags = tags
        if tags is not None:
            code = tags.tag
        else:
            code = self._hashes.get(signature)
            if code is None:
                code = self._hashes[signature] = signature_hash(signature) & 0x7FFFFFFF
        self._call = (sequence, code)
        self._call_start = self._counter

    def begin_round(self):
        """Start a round; returns its parity (which staging half it writes)."""
        parity = self._round & 1
        self._round += 1
        return parity

    def staging(self, rank, parity, dtype, count, start=0):
        """Elements [start, start+count) of `rank`'s staging half `parity`, as `dtype`.
        Views are cached per argument tuple, so a repeated small call builds no arrays."""
        key = (rank, parity, dtype, count, start)
        view = self._views.get(key)
        if view is None:
            itemsize = np.dtype(dtype).itemsize
            offset = self.staging_offset(parity) + start * itemsize
            if len(self._views) >= VIEWS_KEPT:
                self._views.clear()
            view = self._views[key] = self.regions[rank][offset:offset + count * itemsize].view(dtype)
        return view

    def staging_all(self, parity, dtype, count):
        """Every rank's staging elements [0, count) of half `parity`, in rank order (a
        cached list of views: a repeated small call builds nothing)."""
        key = (parity, dtype, count)
        views = self._views.get(key)
        if views is None:
            views = [self.staging(j, parity, dtype, count) for j in range(self.size)]
            self._views[key] = views
        return views

    def staging_offset(self, parity):
        """Byte offset of staging half `parity` in every region."""
        return self._staging_start + parity * self.staging_bytes

    def published(self, rank, offset, dtype, count):
        """The `count` elements rank published at byte `offset` of its region."""
        itemsize = np.dtype(dtype).itemsize
        return self.regions[rank][offset:offset + count * itemsize].view(dtype)

    def offset_in_heap(self, array):
        """Byte offset of `array`'s data in this rank's region if it lies in the heap, else None."""
        if not isinstance(array, np.ndarray):
            return None
        base = self.regions[self.rank].ctypes.data
        offset = array.ctypes.data - base
        if self.heap_offset <= offset and offset + array.nbytes <= self.nbytes:
            return offset
        return None

    @property
    def syncs(self):
        """Sync points this rank has posted so far (the flag counter)."""
        return self._counter

    def post(self, offset=0):
        """Publish a sync point: everything written so far, plus `offset` (where this
        rank's data for the round lie). Returns the counter value peers wait for."""
        line, value = self._line, self._counter + 1
        slot = SLOT0 + (value & 1) * SLOT_FIELDS
        line[slot], line[slot + 1], line[slot + 2] = self._call[0], self._call[1], offset
        self.fence()
        line[COUNTER] = self._counter = value
        return value

    def wait_all(self, timeout):
        """Wait until every peer posted our last sync point, then check it is in the same
        call; returns the offsets every rank (this one too) published with it, in rank
        order. A peer that does not post within `timeout` seconds (None: forever) raises
        TransportTimeout naming it; step = the sync point's number within the call.
        Cost: a spin of sched_yield calls while a peer is behind, then n flag reads."""
        value, lines, polls = self._counter, self._lines, None
        for peer, line in enumerate(lines):   # one tight spin budget for all, then bounded waits
            if line[COUNTER] < value:
                polls = quick_polls() if polls is None else polls
                while line[COUNTER] < value:
                    if polls == 0:
                        self._wait(peer, value, timeout, spun=True)
                        break
                    polls -= 1
                    yield_core()
        self.fence()
        return [self._checked(peer, line, value) for peer, line in enumerate(lines)]

    def wait_for(self, peer, timeout):
        """As wait_all for one peer: wait until it posted our last sync point, check its
        call; returns the offset it published. Waiting for peers one at a time lets a rank
        use the first ones' data while later ones are still on their way."""
        line, value = self._lines[peer], self._counter
        if line[COUNTER] < value:
            self._wait(peer, value, timeout)
        self.fence()
        return self._checked(peer, line, value)

    def _checked(self, peer, line, value):
        """The offset peer published at sync point `value`, after checking its call."""
        slot = SLOT0 + (value & 1) * SLOT_FIELDS
        if (line[slot], line[slot + 1]) != self._call:
            self._mismatch(peer, line[slot], line[slot + 1])
        return line[slot + 2]

    def _wait(self, peer, value, timeout, spun=False):
        """Poll until `peer` reaches counter `value` (bounded; names it): a brief tight
        spin first unless the caller `spun` already (most flags turn within a few
        scheduling rounds), then the bounded wait, which also stops when the world
        aborted."""
        line = self._lines[peer]
        if not spun and spin_briefly(lambda: line[COUNTER] >= value):
            return
        aborted = self._aborted or (lambda: None)
        step = value - self._call_start

        def describe():
            return f"rank {self.rank} waiting for rank {peer}'s shared-memory flag (sync point {step})"
        poll_until(lambda: line[COUNTER] >= value or aborted() is not None,
                   timeout, describe, peer=peer, what="hear through shared memory from", step=step)
        if line[COUNTER] < value:
            raise TransportError(f"{describe()}: gave up because {aborted()}")

    def _mismatch(self, peer, sequence, code):
        if self._tags is not None:
            raise self._tags.mismatch(self.members[self.rank], self.members[peer], code)
        raise CollectiveMismatch(
            f"rank {self.rank}: at shared-memory sync point {self._counter}, rank {peer} is in "
            f"call #{sequence} (signature hash {code:#x}) but this rank is in call "
            f"#{self._call[0]} (signature hash {self._call[1]:#x}): the ranks called "
            f"collectives in a different order or with different arguments")

    def fence(self):
        """Order this rank's memory accesses before and after (overridden over MPI)."""

    def close(self):
        """Release the segment (idempotent); views handed out become invalid over MPI."""
        self.closed = True
        self._views.clear()


class Heap:
    """First-fit allocation of byte ranges in a rank's heap (for comm.empty)."""

    def __init__(self, nbytes):
        self.nbytes = nbytes
        self._free = [(0, nbytes)] if nbytes > 0 else []
        self._lock = threading.Lock()

    def take(self, nbytes):
        """Offset of a free, 64-byte aligned range of nbytes, or None if none is left."""
        size = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self._lock:
            for i, (start, length) in enumerate(self._free):
                if length >= size:
                    self._free[i:i + 1] = [(start + size, length - size)] if length > size else []
                    return start, size
        return None

    def give(self, start, size):
        """Return a range taken earlier; neighbours merge."""
        with self._lock:
            ranges = sorted(self._free + [(start, size)])
            merged = [ranges[0]]
            for s, n in ranges[1:]:
                last_s, last_n = merged[-1]
                if last_s + last_n == s:
                    merged[-1] = (last_s, last_n + n)
                else:
                    merged.append((s, n))
            self._free = merged

    def free_bytes(self):
        with self._lock:
            return sum(n for _, n in self._free)


def heap_array(segment, shape, dtype):
    """A NumPy array of `shape` and `dtype` in this rank's heap, or None if it does not fit.
    Its range goes back to the heap when the array (and every view of it) is collected."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    taken = segment.heap.take(count * dtype.itemsize)
    if taken is None:
        return None
    start, size = taken
    offset = segment.heap_offset + start
    array = segment.regions[segment.rank][offset:offset + count * dtype.itemsize].view(dtype).reshape(shape)
    weakref.finalize(array, segment.heap.give, start, size)
    return array


class LocalSegment(Segment):
    """The in-process segment: one plain NumPy array per rank, shared by the threads."""

    @classmethod
    def create(cls, size, nbytes):
        """The regions of a world of `size` ranks (call once; each rank wraps them), each
        starting on a page, so all are alike within a page as the MPI window's are."""
        nbytes = max(HEADER, int(nbytes))
        return [_page_aligned_zeros(nbytes) for _ in range(size)]


def _page_aligned_zeros(nbytes):
    raw = np.zeros(nbytes + PAGE, np.uint8)
    start = -raw.ctypes.data % PAGE
    return raw[start:start + nbytes]


class MPISegment(Segment):
    """The segment over an MPI-3 shared window on the node's ranks (`node`)."""

    def __init__(self, node, nbytes, rank_in_comm=None):
        from mpi4py import MPI
        members = node.allgather(rank_in_comm) if rank_in_comm is not None else None
        whole_pages = -(-max(HEADER, int(nbytes)) // PAGE) * PAGE    # regions alike within a page
        self._window = MPI.Win.Allocate_shared(whole_pages, 1, comm=node)
        self._window.Lock_all(MPI.MODE_NOCHECK)
        regions = []
        for j in range(node.Get_size()):
            buffer, _ = self._window.Shared_query(j)
            regions.append(np.frombuffer(buffer, np.uint8))
        rank = node.Get_rank()
        node.Free()                     # the window keeps what it needs of the group
        super().__init__(regions, rank, members=members)
        self.fence = self._window.Sync

    def close(self):
        """Stop using the segment (idempotent). The window itself is released by
        MPI_Finalize, not here: MPI_Win_free synchronises the node's ranks, and free() may
        run from garbage collection at different moments on different ranks, where a
        synchronising call could deadlock. Its file was unlinked when it was made, so
        nothing outlives the processes."""
        self.closed = True
        self._views.clear()
        self.regions = self._lines = self._line = None

    def free_window(self):
        """Close the segment and hand its window back to MPI now. MPI_Win_free synchronises
        the segment's ranks: call it only where every one of them does at the same point
        (a sub-communicator's transport does, after a barrier bounded by its timeout)."""
        from mpi4py import MPI
        self.close()
        window, self._window = self._window, None
        if window is not None and not MPI.Is_finalized():
            window.Unlock_all()
            window.Free()
