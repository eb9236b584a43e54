"""Shared-memory algorithms: ranks of one node read each other's data straight out of
the node's segment (collectives/transport/segment.py) instead of sending messages.

A rank publishes its data in its staging area (or, for an array from `comm.empty`, where
it already lies in the segment), posts a flag, and waits for every peer's flag; then it
reads what it needs from the peers' regions. No bytes go through MPI. The segment's
docstring says why a staging area is never overwritten while a peer still reads it.

Buffers larger than a staging half go in rounds; two-shot also cuts them into
8 MiB chunks, one round each, so that while one rank still copies chunk c out a peer
already publishes chunk c+1.

The `prepare_*` functions bind one algorithm to one call signature (shape, dtype, op,
root, block offsets): the views of both staging halves and the op's ufunc are looked up
once, and run(x, out) does what the layered function does for that signature in one
round, with the same sync points and the same ufunc calls (so the same bits), touching as
little as possible per call. The Communicator runs them for its plain synchronous calls.
"""
import numpy as np

from kernels.reference import ufunc_chain

from ..partition import partition
from .common import combine_into, reduce_ordered

# Two-shot round size: each round publishes, reduces and gathers this many bytes.
# Each round costs two sync points, and a sync point costs a scheduling round when ranks
# outnumber cores (milliseconds on a loaded machine): on the 2-core test machine (4 ranks),
# 16 MiB took 1.2 s in 256 KiB rounds, 0.35 s in 1 MiB, 0.10-0.14 s in 4 MiB or 16 MiB
# rounds (one interleaved run, quiet); later, under load 7-12, 8 MiB rounds beat 4 MiB by
# 1.3x at 16 MiB and 1.1x at 8 MiB, and 16 MiB rounds fell in between (interleaved A/B).
CHUNK_BYTES = 8 << 20
# One-shot buffers up to this size wait for every peer at once, then reduce: the least
# Python per call (a call of 8 B costs scheduling rounds, not bytes); larger ones reduce
# each peer's data as soon as it is there. With this path and the tight flag waits the
# one-shot body of an 8 B all-reduce went from 110 to 44-50 us per call (4 ranks on 2
# cores, 200 calls back to back, median of 20 turns); from 64 KiB to 1 MiB waiting for
# all or for each gave the same times (two interleaved bench.allreduce runs).
WAIT_ALL_BYTES = 64 << 10
# One-shot publishes an x of at least this size from the heap (`comm.empty`) where it lies,
# uncopied, at the price of one more sync point (peers must be done reading it before the
# call returns). 4 ranks on 2 cores, interleaved, median (2026-11-26): 1 MiB 410 us
# against 587 with the copy, 2 MiB 729 against 1420; 128-256 KiB 5-10% slower.
UNSTAGED_BYTES = 512 << 10


def segment_of(t):
    """The transport's shared segment if it spans exactly t's ranks, else None."""
    segment = t.capabilities.shared_segment
    if segment is None or segment.closed or segment.size != t.size or segment.staging_bytes < 64:
        return None
    return segment


def _sync(t, segment, offset=0):
    """Post a sync point publishing `offset`, wait for every peer."""
    segment.post(offset)
    segment.wait_all(t.timeout)


def _nothing_to_combine(t, x, out):
    """True, after out = x, when an all-reduce has nothing to combine (one rank, or no
    elements)."""
    if t.size > 1 and x.size:
        return False
    if out is not x:
        out[...] = x
    return True


def _rounds(segment, buf, limit=None):
    """(start, stop, parity) for each round over buf: element ranges of at most `limit`
    bytes (default: a staging half) covering it, each round begun on the segment as it
    is reached (its parity: which staging half it uses)."""
    per_round = max(1, (limit or segment.staging_bytes) // buf.itemsize)
    for start in range(0, buf.size, per_round):
        yield start, min(start + per_round, buf.size), segment.begin_round()


def oneshot_allreduce(t, x, out, op, ws):
    """One-shot all-reduce: every rank publishes x, then reduces all n published copies.

    Each round: copy x's piece into this rank's staging area (none when x, of at least
    UNSTAGED_BYTES, lies in the segment's heap from `comm.empty` and is not `out`: peers
    read it where it is), one sync point, then out = x_0 <op> x_1 <op> ... <op> x_{n-1},
    read from where each rank published. Up to WAIT_ALL_BYTES a rank waits for every peer
    at once and reduces from a cached list of views (the least Python per call); larger
    buffers wait for each peer only when its operand is next. When any rank published from
    its heap (every rank sees every offset, so all decide alike) a last sync point tells
    it that nobody reads its x any more. Every rank combines the same operands in the same
    (rank) order, so all results are bitwise equal. Latency-optimal: one sync point per
    round (one for buffers up to a staging half), plus one after heap publishing.
    Cost per rank: one copy of the buffer in (none from the heap), n reads of it, n-1
    reductions of it; nothing through the network.
    """
    r = t.rank
    if _nothing_to_combine(t, x, out):
        return
    segment = segment_of(t)
    if x.nbytes <= WAIT_ALL_BYTES and x.nbytes <= segment.staging_bytes:
        parity = segment.begin_round()
        segment.staging(r, parity, x.dtype, x.size)[...] = x     # the write: one pass
        segment.post(segment.staging_offset(parity))
        segment.wait_all(t.timeout)
        reduce_ordered(out, segment.staging_all(parity, x.dtype, x.size), op)    # n reads
        return
    in_heap = _unstaged_offset(segment, x, out)
    heap_used = False
    for start, stop, parity in _rounds(segment, x):
        count = stop - start
        if in_heap is None:
            segment.staging(r, parity, x.dtype, count)[...] = x[start:stop]
            segment.post(segment.staging_offset(parity))
        else:
            segment.post(in_heap + start * x.itemsize)
        offsets = []

        def published(j, offset):    # rank j's piece of this round, where j published it
            offsets.append(offset)
            return segment.published(j, offset, x.dtype, count)
        reduce_ordered(out[start:stop], _in_rank_order(t, segment, published), op)
        heap_used = heap_used or any(offset >= segment.heap_offset for offset in offsets)
    if heap_used:
        _sync(t, segment)         # every peer has read every round's heap data


def prepare_oneshot(t, x, op):
    """oneshot_allreduce bound to one call signature (x's shape and dtype, combine op `op`)
    on transport t: a function run(x, out) for arrays of that signature doing exactly what
    its small path does (copy x in, one sync point, reduce all n copies in rank order into
    out, with the same ufunc calls: the same bits), with the views, the op's ufunc and the
    rank looked up once, so that a repeated small call touches as little as possible. None
    where that path does not apply: one rank, no segment or one that must see every view
    (simulated, traced: not `bindable`), an empty x or one larger than WAIT_ALL_BYTES or a
    staging half. The caller runs it only when no observer needs to see the reduction (the
    Communicator's plain synchronous calls)."""
    segment = _bindable_one_round(t, x.nbytes)
    if segment is None or x.nbytes > WAIT_ALL_BYTES:
        return None
    r, chain = t.rank, ufunc_chain(op)
    views = [[view.reshape(x.shape) for view in segment.staging_all(parity, x.dtype, x.size)] for parity in (0, 1)]
    mine = [views[parity][r] for parity in (0, 1)]
    offsets = [segment.staging_offset(parity) for parity in (0, 1)]

    def run(x, out):
        chain(out, views[_exchange(t, segment, mine, x, offsets)])
    return run


def _bindable_one_round(t, nbytes):
    """The segment t's shared-memory algorithms use, if a call passing `nbytes` through
    each staging half may be bound ahead (see prepare_oneshot): more than one rank, a
    segment that lets views be kept (`bindable`), and 0 < nbytes <= a staging half (one
    round). Else None."""
    segment = segment_of(t)
    if t.size < 2 or segment is None or not segment.bindable or not 0 < nbytes <= segment.staging_bytes:
        return None
    return segment


def _exchange(t, segment, mine, x, offsets=None):
    """A prepared call's sync point (see prepare_oneshot): begin a round, copy x into this
    rank's bound slot of its parity (mine[parity]; mine None: this rank publishes nothing),
    post (publishing offsets[parity], default 0, as the layered function does), wait for
    every peer. Returns the round's parity. Raises once the segment is closed: the bound
    views no longer map it."""
    if segment.closed:
        raise RuntimeError(f"rank {t.rank}: the shared segment of this communicator is closed")
    parity = segment.begin_round()
    if mine is not None:
        mine[parity][...] = x
    segment.post(0 if offsets is None else offsets[parity])
    segment.wait_all(t.timeout)
    return parity


def prepare_broadcast(t, x, root):
    """broadcast bound to x's shape and dtype and `root` on transport t: run(x, out), out
    being x, doing what broadcast does in one round (root copies x into its staging half,
    one sync point, every other rank copies it out) with root's views looked up once.
    None where that does not apply: one rank, no bindable segment, an empty x or one
    larger than a staging half."""
    segment = _bindable_one_round(t, x.nbytes)
    if segment is None:
        return None
    is_root = t.rank == root
    views = [segment.staging(root, parity, x.dtype, x.size).reshape(x.shape) for parity in (0, 1)]

    def run(x, out):
        parity = _exchange(t, segment, views if is_root else None, x)
        if not is_root:
            x[...] = views[parity]
    return run


def prepare_allgather(t, x):
    """allgather bound to x's shape and dtype on transport t: run(x, out) filling out
    (shape (n * x.shape[0],) + x.shape[1:], or (n,) for a 0-d x) as allgather does in one
    round (each rank copies x into its block of its staging half, one sync point, every
    rank copies the other blocks out), with every block's view looked up once. None where
    that does not apply: one rank, no bindable segment, an empty x or a gathered buffer
    larger than a staging half."""
    n, r = t.size, t.rank
    segment = _bindable_one_round(t, n * x.nbytes)
    if segment is None:
        return None
    rows = (n,) + x.shape
    blocks = [[segment.staging(j, parity, x.dtype, x.size, start=j * x.size).reshape(x.shape)
               for j in range(n)] for parity in (0, 1)]
    mine = [blocks[parity][r] for parity in (0, 1)]
    others = [j for j in range(n) if j != r]

    def run(x, out):
        published = blocks[_exchange(t, segment, mine, x)]
        gathered = out.reshape(rows)
        gathered[r] = x
        for j in others:
            gathered[j] = published[j]
    return run


def prepare_reduce_scatter(t, x, op, offsets):
    """reduce_scatter bound to x's shape and dtype, combine op `op` and the block
    `offsets` on transport t: run(x, out) doing what reduce_scatter does in one round
    (copy x into the staging half, one sync point, reduce this rank's block from all n
    halves in rank order into out, with the same ufunc calls: the same bits), with every
    view and the op's ufunc looked up once. None where that does not apply: one rank, no
    bindable segment, an empty x or one larger than a staging half."""
    segment = _bindable_one_round(t, x.nbytes)
    if segment is None:
        return None
    n, r, chain = t.size, t.rank, ufunc_chain(op)
    lo, hi = offsets[r], offsets[r + 1]
    staged = [segment.staging(r, parity, x.dtype, x.size).reshape(x.shape) for parity in (0, 1)]
    blocks = [[segment.staging(j, parity, x.dtype, hi - lo, start=lo) for j in range(n)] for parity in (0, 1)]

    def run(x, out):
        chain(out, blocks[_exchange(t, segment, staged, x)])
    return run


def prepare_reduce(t, x, op, root):
    """reduce bound to x's shape and dtype, combine op `op` and `root` on transport t:
    run(x, out) doing what reduce does in one round (every rank copies x into its staging
    half, one sync point, root reduces all n halves in rank order into out, with the same
    ufunc calls: the same bits; out is None on the other ranks), with every view and the
    op's ufunc looked up once. None where that does not apply: one rank, no bindable
    segment, an empty x or one larger than a staging half."""
    segment = _bindable_one_round(t, x.nbytes)
    if segment is None:
        return None
    r, chain = t.rank, ufunc_chain(op)
    views = [[view.reshape(x.shape) for view in segment.staging_all(parity, x.dtype, x.size)] for parity in (0, 1)]
    mine = [views[parity][r] for parity in (0, 1)]

    def run(x, out):
        parity = _exchange(t, segment, mine, x)
        if r == root:
            chain(out, views[parity])
    return run


def _unstaged_offset(segment, x, out):
    """Where x lies in this rank's heap if one-shot may publish it there, uncopied: it is
    at least UNSTAGED_BYTES and `out` does not overlap it (peers read x until the call's
    last sync point, and this rank writes out before then); else None."""
    if x.nbytes < UNSTAGED_BYTES or np.may_share_memory(x, out):
        return None
    return segment.offset_in_heap(x)


def twoshot_allreduce(t, x, out, op, ws, chunk_bytes=CHUNK_BYTES):
    """Two-shot all-reduce: reduce-scatter then all-gather through the segment.

    Per round (one chunk): every rank publishes its chunk but its own block (no copy when x
    lies in the segment's heap, from `comm.empty`) and posts; once every rank posted, rank
    r reduces block r of the chunk (cc.partition) from all n chunks in rank order and puts
    the result in its staging area; posts; once every rank posted, copies every other
    rank's reduced block out. Each block is reduced by one rank only, so all ranks hold
    bitwise-equal results.
    Bandwidth-optimal: per rank (n-1)/n of the chunk copied in (none from the heap),
    1/n of every peer's chunk read, (n-1)/n reduced, the buffer copied out once
    ((3n-2)/n passes over the buffer in all); 2 sync points per round.
    """
    n, r = t.size, t.rank
    if _nothing_to_combine(t, x, out):
        return
    segment = segment_of(t)
    in_heap = segment.offset_in_heap(x)
    limit = min(segment.staging_bytes, chunk_bytes)
    for start, stop, parity in _rounds(segment, x, limit):
        count = stop - start
        blocks = partition(count, n)
        if in_heap is None:
            _publish_others_blocks(segment, x, start, blocks, r, parity)
            where = segment.staging_offset(parity)
        else:
            where = in_heap + start * x.itemsize
        segment.post(where)
        offsets = segment.wait_all(t.timeout)
        _reduce_block(t, segment, x, out, start, blocks, op, parity, offsets)
        _sync(t, segment)
        _gather_blocks(t, segment, out, start, blocks, parity)


def ring_allreduce(t, x, out, op, ws):
    """Ring all-reduce through the segment ("shm_ring"): a reduce-scatter around the ring
    in which each rank adds its own blocks straight from x, then an all-gather.

    Per round (a staging half of x; blocks by cc.partition): rank r copies block r-1 of
    the piece into its staging area; in step s = 1..n-1 it combines what rank r-1 left in
    its staging area for block r-1-s with its own block r-1-s of x, into its own staging
    area; after step n-1 it holds block r reduced, and every rank copies all n reduced
    blocks out. Block b is combined by one chain of ranks, in ring order x_{b+1} <op>
    x_{b+2} <op> ... <op> x_b, so every rank gets the same bits (for floats not those of
    oneshot/twoshot, which combine in rank order). Each sync point is a post and a wait
    for every peer, so the segment's argument for reusing staging holds as it is.
    Where twoshot first copies (n-1)/n of x into the segment and then reduces, the ring's
    reduction writes its partial sums there itself: per rank 1/n of x copied in, n-1
    passes over a block (a peer's partial sum, x, the new partial sum), x's size copied
    out; about 4.75 buffer sizes of memory traffic against twoshot's 5.75 at n = 4. The
    price: n sync points per round against two. It wins for ordinary (not `comm.empty`)
    buffers from about 1 MiB with few ranks per node; twoshot reads `comm.empty` buffers
    without the copy and keeps the lead there.
    """
    n, r = t.size, t.rank
    if _nothing_to_combine(t, x, out):
        return
    segment = segment_of(t)
    left = (r - 1) % n
    for start, stop, parity in _rounds(segment, x):
        blocks = partition(stop - start, n)

        def slot(rank, b):          # block b of rank's staging area in this round
            return segment.staging(rank, parity, x.dtype, blocks[b + 1] - blocks[b], start=blocks[b])

        def mine(b):                # block b of this round's piece of x
            return x[start + blocks[b]:start + blocks[b + 1]]
        slot(r, left)[...] = mine(left)
        for step in range(1, n):
            _sync(t, segment)
            b = (r - 1 - step) % n
            combine_into(slot(r, b), slot(left, b), mine(b), op)
        _sync(t, segment)            # every block reduced: x is read, out may be written
        out[start + blocks[r]:start + blocks[r + 1]] = slot(r, r)
        _gather_blocks(t, segment, out, start, blocks, parity)


def _gather_blocks(t, segment, out, start, blocks, parity):
    """Copy every other rank's reduced block of the round into out."""
    for j in range(t.size):
        lo, hi = blocks[j], blocks[j + 1]
        if j != t.rank and hi > lo:
            out[start + lo:start + hi] = segment.staging(j, parity, out.dtype, hi - lo, start=lo)


def _publish_others_blocks(segment, x, start, blocks, r, parity):
    """Copy the round's chunk of x into r's staging area, all but block r: only rank r
    reads block r, and it reads it from x itself."""
    lo, hi, count = blocks[r], blocks[r + 1], blocks[-1]
    if lo > 0:
        segment.staging(r, parity, x.dtype, lo)[...] = x[start:start + lo]
    if hi < count:
        segment.staging(r, parity, x.dtype, count - hi, start=hi)[...] = x[start + hi:start + count]


def _reduce_block(t, segment, x, out, start, blocks, op, parity, offsets):
    """Rank r's block of one two-shot round: reduce it in rank order from every peer's
    published chunk (at `offsets`, where each published it) and from x itself, into r's
    staging area at block r (never published: peers read it only after r's next post),
    then copy it into out (which may be x: its block is read before it is written).
    """
    r = t.rank
    lo, hi = blocks[r], blocks[r + 1]
    operands = [x[start + lo:start + hi] if j == r else
                segment.published(j, offsets[j] + lo * x.itemsize, x.dtype, hi - lo) for j in range(t.size)]
    mine = segment.staging(r, parity, x.dtype, hi - lo, start=lo)
    reduce_ordered(mine, operands, op, copy_to=out[start + lo:start + hi])


def _in_rank_order(t, segment, view):
    """view(j, offset j published) for every rank j in rank order, each once rank j has
    posted our last sync point: a rank combines the first operands while later ones are
    still being published."""
    for j in range(t.size):
        yield view(j, segment.wait_for(j, t.timeout))


def _overlap(lo, hi, start, stop):
    """[lo, hi) cut to [start, stop), as a (possibly empty) range."""
    return max(lo, start), max(min(hi, stop), max(lo, start))


def reduce_scatter(t, x, out, op, offsets, ws):
    """Shared-memory reduce-scatter: every rank publishes x, rank r reduces its block.

    Per round (a staging half of x): copy x's piece in, one sync point, then rank r
    reduces the part of its block (`offsets`) in the piece from all n published pieces in
    rank order into out. Cost per rank: x copied in once, 1/n of it read from each rank,
    (n-1)/n of it reduced; one sync point per round.
    """
    n, r = t.size, t.rank
    lo, hi = offsets[r], offsets[r + 1]
    if n == 1 or x.size == 0:
        out[...] = x[lo:hi]
        return
    segment = segment_of(t)
    for start, stop, parity in _rounds(segment, x):
        segment.staging(r, parity, x.dtype, stop - start)[...] = x[start:stop]
        _sync(t, segment)
        a, b = _overlap(lo, hi, start, stop)
        reduce_ordered(out[a - lo:b - lo],
                         [segment.staging(j, parity, x.dtype, b - a, start=a - start) for j in range(n)], op)


def allgather(t, buf, offsets, ws=None):
    """Shared-memory all-gather in place: every rank publishes its block, everyone copies.

    Per round (a staging half of buf): rank r copies the part of its block in the round
    into its staging area, one sync point, then copies every other rank's part out.
    Cost per rank: its block copied in, (n-1)/n of buf copied out; one sync point per round.
    """
    n, r = t.size, t.rank
    if n == 1 or buf.size == 0:
        return
    segment = segment_of(t)
    for start, stop, parity in _rounds(segment, buf):
        a, b = _overlap(offsets[r], offsets[r + 1], start, stop)
        segment.staging(r, parity, buf.dtype, b - a, start=a - start)[...] = buf[a:b]
        _sync(t, segment)
        for j in range(n):
            a, b = _overlap(offsets[j], offsets[j + 1], start, stop)
            if j != r and b > a:
                buf[a:b] = segment.staging(j, parity, buf.dtype, b - a, start=a - start)


def broadcast(t, buf, root, ws=None):
    """Shared-memory broadcast: root publishes, one sync point, every rank copies.

    Cost per round (a staging half of buf): root copies it in, every other rank copies it
    out; one sync point.
    """
    n, r = t.size, t.rank
    if n == 1 or buf.size == 0:
        return
    segment = segment_of(t)
    for start, stop, parity in _rounds(segment, buf):
        if r == root:
            segment.staging(r, parity, buf.dtype, stop - start)[...] = buf[start:stop]
        _sync(t, segment)
        if r != root:
            buf[start:stop] = segment.staging(root, parity, buf.dtype, stop - start)


def reduce(t, work, op, root, ws):
    """Shared-memory reduce to root: every rank publishes, root reduces all n in rank order.

    Cost per round (a staging half of work): every rank copies it in, one sync point, root
    reads n copies and reduces n-1 of them.
    """
    n, r = t.size, t.rank
    if n == 1 or work.size == 0:
        return
    segment = segment_of(t)
    for start, stop, parity in _rounds(segment, work):
        count = stop - start
        segment.staging(r, parity, work.dtype, count)[...] = work[start:stop]
        _sync(t, segment)
        if r == root:
            reduce_ordered(work[start:stop], [segment.staging(j, parity, work.dtype, count) for j in range(n)], op)
