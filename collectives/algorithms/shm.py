"""Shared-memory algorithms: ranks of one node read each other's data straight out of
the node's segment (collectives/transport/segment.py) instead of sending messages.

A rank publishes its data in its staging area (or, for an array from `comm.empty`, where
it already lies in the segment), posts a flag, and waits for every peer's flag; then it
reads what it needs from the peers' regions. No bytes go through MPI. The segment's
docstring says why a staging area is never overwritten while a peer still reads it.

Buffers larger than a staging half go in rounds; two-shot also cuts them into
cache-sized chunks, one round each, so that while one rank still reduces chunk c a peer
already publishes chunk c+1.
"""
from ..partition import partition
from .common import reduce_into

# Two-shot round size: each round publishes, reduces and gathers this many bytes, small
# enough that a rank's block of it stays in its core's cache between the phases.
CHUNK_BYTES = 1 << 20


def segment_of(t):
    """The transport's shared segment if it spans exactly t's ranks, else None."""
    segment = t.capabilities.shared_segment
    if segment is None or segment.closed or segment.size != t.size or segment.staging_bytes < 64:
        return None
    return segment


def _sync(t, segment, offset=0):
    """Post a sync point publishing `offset`, wait for every peer; the peers' offsets."""
    segment.post(offset)
    return segment.wait_all(t.timeout)


def _rounds(count, itemsize, limit):
    """(start, stop) element ranges of at most `limit` bytes covering count elements."""
    per_round = max(1, limit // itemsize)
    return [(start, min(start + per_round, count)) for start in range(0, count, per_round)]


def oneshot_allreduce(t, x, out, op, ws):
    """One-shot all-reduce: every rank publishes x, then reduces all n published copies.

    Each round: copy x's piece into this rank's staging area, one sync point, then
    out = x_0 <op> x_1 <op> ... <op> x_{n-1}, read from the peers' staging areas. Every
    rank combines the same operands in the same (rank) order, so all results are bitwise
    equal. Latency-optimal: one sync point per round (one for buffers up to a staging half).
    Cost per rank: one copy of the buffer in, n reads of it, n-1 reductions of it; nothing
    through the network.
    """
    n, r = t.size, t.rank
    if n == 1 or x.size == 0:
        if out is not x:
            out[...] = x
        return
    segment = segment_of(t)
    for start, stop in _rounds(x.size, x.itemsize, segment.staging_bytes):
        parity = segment.begin_round()
        count = stop - start
        segment.staging(r, parity, x.dtype, count)[...] = x[start:stop]
        _sync(t, segment, segment.staging_offset(parity))
        result = out[start:stop]
        result[...] = segment.staging(0, parity, x.dtype, count)
        for j in range(1, n):
            reduce_into(result, segment.staging(j, parity, x.dtype, count), op)


def twoshot_allreduce(t, x, out, op, ws, chunk_bytes=CHUNK_BYTES):
    """Two-shot all-reduce: reduce-scatter then all-gather through the segment.

    Per round (one cache-sized chunk): every rank publishes its chunk (no copy when x lies
    in the segment's heap, from `comm.empty`); sync; rank r reduces block r of the chunk
    (cc.partition) from all n published chunks in rank order and puts the result in its
    staging area; sync; every rank copies every other rank's reduced block. Each block is
    reduced by one rank only, so all ranks hold bitwise-equal results.
    Bandwidth-optimal: per rank one copy in (none from the heap), reads of 1/n of every
    peer's chunk, (n-1)/n reduced, the buffer copied out once; 2 sync points per round.
    """
    n, r = t.size, t.rank
    if n == 1 or x.size == 0:
        if out is not x:
            out[...] = x
        return
    segment = segment_of(t)
    in_heap = segment.offset_in_heap(x)
    limit = min(segment.staging_bytes, chunk_bytes)
    for start, stop in _rounds(x.size, x.itemsize, limit):
        parity = segment.begin_round()
        count = stop - start
        blocks = partition(count, n)
        if in_heap is None:
            segment.staging(r, parity, x.dtype, count)[...] = x[start:stop]
            where = segment.staging_offset(parity)
        else:
            where = in_heap + start * x.itemsize
        published = _sync(t, segment, where)
        _reduce_block(t, segment, published, x, out, start, blocks, op, ws, parity)
        _sync(t, segment)
        for j in range(n):
            if j != r:
                lo, hi = blocks[j], blocks[j + 1]
                out[start + lo:start + hi] = segment.staging(j, parity, x.dtype, hi - lo, start=lo)


def _reduce_block(t, segment, published, x, out, start, blocks, op, ws, parity):
    """Rank r's block of one two-shot round: reduce it from every rank's published chunk
    in rank order into out, and leave a copy in r's staging area for the peers."""
    n, r = t.size, t.rank
    lo, hi = blocks[r], blocks[r + 1]
    count = blocks[n]

    def block_of(j):
        return segment.published(j, published[j], x.dtype, count)[lo:hi]
    # In place on a published heap array, out's block is still operand r: reduce aside.
    target = out[start + lo:start + hi]
    aside = x is out and published[r] != segment.staging_offset(parity)
    result = ws.get("twoshot", hi - lo, x) if aside else target
    result[...] = block_of(0)
    for j in range(1, n):
        reduce_into(result, block_of(j), op)
    segment.staging(r, parity, x.dtype, hi - lo, start=lo)[...] = result
    if aside:
        target[...] = result
