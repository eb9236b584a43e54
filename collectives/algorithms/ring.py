"""Ring algorithms (Patarasuk and Yuan 2009): bandwidth-optimal, latency linear in n.

Rank r sends only to its right neighbour (r+1) and receives only from its left (r-1).
The buffer is cut into n blocks (`cc.partition`); each step moves one block per rank, so
every link carries traffic at every step.
"""
from ..partition import block, partition
from .common import reduce_into


def reduce_scatter(t, x, out, op, offsets, ws):
    """Ring reduce-scatter: afterwards `out` holds block r of the reduction of every rank's x.

    `x` is read, never written; `out` may be x's own block r (the all-reduce uses that).
    Step s (0 <= s < n-1): rank r sends its partial sum of block (r-s-1) mod n to the right
    and receives the left neighbour's partial of block (r-s-2) mod n, to which it adds its
    own x. Invariant: after step s, the partial rank r holds for block (r-s-2) mod n has
    s+2 contributions, so after n-1 steps block r has all n. Each block is reduced along
    one chain, so every rank's copy of it is bitwise the same.
    Cost: n-1 steps; (n-1)/n of the buffer sent and received per rank; (n-1)/n reduced.
    """
    n, r = t.size, t.rank
    right, left = (r + 1) % n, (r - 1) % n
    if n == 1:
        if out is not x:
            out[...] = x
        return
    width = max(offsets[i + 1] - offsets[i] for i in range(n))
    partial = [ws.get("ring0", width, x), ws.get("ring1", width, x)]
    sending = block(x, offsets, (r - 1) % n)
    for s in range(n - 1):
        b = (r - s - 2) % n
        size = offsets[b + 1] - offsets[b]
        incoming = partial[s % 2][:size]
        t.sendrecv(sending, right, incoming, left)
        if s < n - 2:
            reduce_into(incoming, block(x, offsets, b), op)
            sending = incoming
    own = block(x, offsets, r)
    if out is not own:
        out[...] = own
    reduce_into(out, incoming, op)


def allgather(t, buf, offsets, ws=None):
    """Ring all-gather in place: block r of `buf` is this rank's; afterwards all blocks are filled.

    Step s: rank r forwards block (r-s) mod n to the right and receives block (r-s-1) mod n
    from the left, so after step s it holds blocks r, r-1, ..., r-s-1.
    Cost: n-1 steps; (n-1)/n of the buffer sent and received per rank.
    """
    n, r = t.size, t.rank
    right, left = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):
        t.sendrecv(block(buf, offsets, (r - s) % n), right,
                   block(buf, offsets, (r - s - 1) % n), left)


def allreduce(t, x, out, op, ws):
    """Ring all-reduce = ring reduce-scatter of x into out's block r, then ring all-gather
    of out (x may be out: in place).

    After the reduce-scatter rank r holds the full reduction of block r; the all-gather
    hands every block around the ring. Out of place, x is only read: no copy of x into
    out is needed.
    Cost: 2(n-1) steps; 2(n-1)/n of the buffer sent and received per rank; (n-1)/n reduced.
    """
    if t.size == 1:
        if out is not x:
            out[...] = x
        return
    offsets = partition(x.size, t.size)
    reduce_scatter(t, x, block(out, offsets, t.rank), op, offsets, ws)
    allgather(t, out, offsets)


def reduce(t, work, op, root, ws):
    """Reduce to `root` by a ring reduce-scatter, then every rank sends its block to root.

    Bandwidth-friendly for large buffers: each rank sends about 2(n-1)/n of the buffer,
    and root receives (n-1)/n of it in the final gather instead of n-1 whole buffers.
    Cost: n-1 ring steps plus one gather step of n-1 messages into root.
    """
    n, r = t.size, t.rank
    if n == 1:                  # work already holds the result
        return
    offsets = partition(work.size, n)
    reduce_scatter(t, work, block(work, offsets, r), op, offsets, ws)
    if r == root:
        requests = [t.irecv(block(work, offsets, i), i) for i in range(n) if i != root]
        t.waitall(requests)
    else:
        t.sendrecv(block(work, offsets, r), root, None, None)
