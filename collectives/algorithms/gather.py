"""Gather and scatter: blocks between one root and every rank.

    gather(t, mine, out, offsets, root, ws)    root's out block i = rank i's `mine`
    scatter(t, x, mine, offsets, root, ws)     rank i's `mine` = root's x block i
`out` (gather) and `x` (scatter) matter on the root only (None elsewhere); block i is
[offsets[i], offsets[i+1]) and must have `mine`'s length on rank i. Nothing is reduced.

The binomial tree numbers ranks relative to the root, v = (rank - root) mod n. Vrank v
(v > 0) hangs below v - lowbit(v), and its subtree is the vranks [v, v + lowbit(v)):
a contiguous range, so a subtree's blocks travel as one message in vrank order.
"""
from ..partition import block


def _lowbit(v, n):
    """The span of vrank v's subtree bound: lowest set bit of v (for the root, the
    smallest power of two >= n)."""
    if v:
        return v & -v
    span = 1
    while span < n:
        span *= 2
    return span


def _vrank_layout(offsets, root, n):
    """Offsets of the blocks in vrank order (vrank j is rank (j + root) mod n)."""
    sizes = [offsets[(j + root) % n + 1] - offsets[(j + root) % n] for j in range(n)]
    layout = [0]
    for size in sizes:
        layout.append(layout[-1] + size)
    return layout


def _rotate(real, vrank_buf, offsets, root, to_vrank):
    """Copy between real rank order and vrank order (two slices: ranks root..n-1 come
    first in vrank order)."""
    tail = offsets[-1] - offsets[root]
    if to_vrank:
        vrank_buf[:tail] = real[offsets[root]:]
        vrank_buf[tail:] = real[:offsets[root]]
    else:
        real[offsets[root]:] = vrank_buf[:tail]
        real[:offsets[root]] = vrank_buf[tail:]


def gather_tree(t, mine, out, offsets, root, ws):
    """Binomial-tree gather: ceil(log2 n) steps; the root's message count is log2 n.

    Step k (k = 1, 2, 4, ...): a vrank with bit k set sends everything it holds (its
    subtree's blocks [v, v+k)) to vrank v-k and is done; a vrank v without it receives
    the blocks of [v+k, v+2k) from v+k. After the last step the root holds all blocks.
    Cost: ceil(log2 n) steps at the root; each block is sent about log2(n)/2 times on
    average, so about (log2 n)/2 of the output moves per rank (the root receives
    (n-1)/n of it); a root other than rank 0 adds one rotation copy.
    """
    n, r = t.size, t.rank
    v = (r - root) % n
    layout = _vrank_layout(offsets, root, n)
    span = min(_lowbit(v, n), n - v)
    if v == 0 and root == 0:
        held = out
    else:
        held = ws.get("gather", layout[v + span] - layout[v], mine)
    base = layout[v]
    held[:mine.size] = mine
    k = 1
    while k < n:
        if v & k:
            t.sendrecv(held[:layout[v + span] - base], (v - k + root) % n, None, None)
            return
        if v + k < n:
            hi = min(v + 2 * k, n)
            t.sendrecv(None, None, held[layout[v + k] - base:layout[hi] - base], (v + k + root) % n)
        k *= 2
    if held is not out:
        _rotate(out, held, offsets, root, to_vrank=False)


def scatter_tree(t, x, mine, offsets, root, ws):
    """Binomial-tree scatter, the gather's mirror: ceil(log2 n) steps.

    Vrank v > 0 first receives its subtree's blocks [v, v + lowbit(v)) from v - lowbit(v);
    then for k = lowbit(v)/2, ..., 2, 1 it hands the blocks [v+k, v+2k) to v+k (the root
    starts from the largest power of two below n). Its own block is the first it holds.
    Cost: ceil(log2 n) steps at the root, which sends (n-1)/n of x in log2 n messages;
    a root other than rank 0 adds one rotation copy.
    """
    n, r = t.size, t.rank
    v = (r - root) % n
    layout = _vrank_layout(offsets, root, n)
    span = min(_lowbit(v, n), n - v)
    base = layout[v]
    if v == 0:
        held = x if root == 0 else ws.get("scatter", layout[n], x)
        if held is not x:
            _rotate(x, held, offsets, root, to_vrank=True)
    else:
        held = ws.get("scatter", layout[v + span] - base, mine)
        parent = (v - (v & -v) + root) % n
        t.sendrecv(None, None, held, parent)
    k = _lowbit(v, n) // 2
    sends = []
    while k >= 1:
        if v + k < n:
            hi = min(v + 2 * k, n)
            sends.append(t.isend(held[layout[v + k] - base:layout[hi] - base], (v + k + root) % n))
        k //= 2
    mine[...] = held[:mine.size]
    t.waitall(sends)


def gather_linear(t, mine, out, offsets, root, ws=None):
    """Every rank sends its block straight to the root, which posts all n-1 receives at
    once. Cost: one step; the root receives (n-1)/n of the output in n-1 messages."""
    n, r = t.size, t.rank
    if r != root:
        t.sendrecv(mine, root, None, None)
        return
    block(out, offsets, r)[...] = mine
    t.waitall([t.irecv(block(out, offsets, i), i) for i in range(n) if i != root])


def scatter_linear(t, x, mine, offsets, root, ws=None):
    """The root sends every rank its block directly, all n-1 sends at once.
    Cost: one step; the root sends (n-1)/n of x in n-1 messages."""
    n, r = t.size, t.rank
    if r != root:
        t.sendrecv(None, None, mine, root)
        return
    sends = [t.isend(block(x, offsets, i), i) for i in range(n) if i != root]
    mine[...] = block(x, offsets, r)
    t.waitall(sends)
