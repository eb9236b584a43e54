"""Recursive doubling and halving (Thakur, Rabenseifner and Gropp 2005).

In step k rank i talks to rank i XOR 2^k, so log2(n) steps suffice. A world that is not a
power of two is first folded onto the largest power of two p <= n (common.Fold): the
first 2(n-p) ranks pair up, the even one of each pair hands its data to the odd one, and
gets the result back at the end. That costs two extra steps of the whole buffer.
"""
from ..partition import partition
from .common import Fold, reduce_into


def _fold_in(t, fold, x, out, op, ws):
    """Even ranks of the folded pairs send x to their odd partner, which reduces it into
    out. Returns where this rank's data now is: out if it was written, else x."""
    if fold.partner is None:
        return x
    if fold.new is None:
        t.sendrecv(x, fold.partner, None, None)
        return x
    incoming = ws.get("fold", x.size, x)
    t.sendrecv(None, None, incoming, fold.partner)
    if out is not x:
        out[...] = x
    reduce_into(out, incoming, op, reverse=True)   # canonical order: even rank's data first
    return out


def _fold_out(t, fold, buf):
    """Odd ranks of the folded pairs hand the finished `buf` back to their even partner."""
    if fold.partner is None:
        return
    if fold.new is None:
        t.sendrecv(None, None, buf, fold.partner)
    else:
        t.sendrecv(buf, fold.partner, None, None)


def allreduce(t, x, out, op, ws):
    """Recursive-doubling all-reduce of x into out (x may be out): every step exchanges
    the whole buffer.

    After step k, active rank i holds the reduction over the 2^(k+1) active ranks that
    share i's bits above k. The pair combines in a canonical order (lower rank's data
    first), so both sides, and so all ranks, end bitwise equal.
    Cost: log2 p steps (+2 when n is not a power of two), each sending and receiving and
    reducing the whole buffer: latency-optimal, for small messages.
    """
    fold = Fold(t.rank, t.size)
    src = _fold_in(t, fold, x, out, op, ws)
    buf = out
    if fold.new is not None:
        if src is not buf:
            buf[...] = src
        incoming = ws.get("doubling", buf.size, buf)
        distance = 1
        while distance < fold.p:
            partner_new = fold.new ^ distance
            t.sendrecv(buf, fold.real(partner_new), incoming, fold.real(partner_new))
            reduce_into(buf, incoming, op, reverse=partner_new < fold.new)
            distance *= 2
    _fold_out(t, fold, buf)


def _group_bounds(fold, offsets):
    """Element offsets of the p active ranks' blocks: active rank i owns the original
    blocks of the rank(s) it stands for, a contiguous range."""
    return [offsets[fold.first_block(i)] for i in range(fold.p)] + [offsets[-1]]


def _halving(t, fold, src, buf, op, bounds, ws):
    """Recursive-halving reduce-scatter among the active ranks, from src into buf (src
    may be buf). Only the first step reads src: it sends half of src and copies the kept
    half into buf before reducing, so out of place costs a copy of half the buffer.

    The active ranks' range of blocks halves every step: a rank keeps the half that holds
    its own block, sends the other half to its partner and reduces the partner's copy of
    the kept half into its own. After log2 p steps, active rank i holds the full reduction
    of its block(s) bounds[i]:bounds[i+1], each reduced at exactly one rank.
    """
    me, lo, hi = fold.new, 0, fold.p
    distance = fold.p // 2
    while distance >= 1:
        partner_new = me ^ distance
        mid = lo + distance
        if me < mid:
            keep, give, hi = (lo, mid), (mid, hi), mid
        else:
            keep, give, lo = (mid, hi), (lo, mid), mid
        kept = buf[bounds[keep[0]]:bounds[keep[1]]]
        incoming = ws.get("halving", kept.size, buf)
        t.sendrecv(src[bounds[give[0]]:bounds[give[1]]], fold.real(partner_new),
                   incoming, fold.real(partner_new))
        if src is not buf:
            kept[...] = src[bounds[keep[0]]:bounds[keep[1]]]
            src = buf
        reduce_into(kept, incoming, op)
        distance //= 2
    if src is not buf:                      # a world of one: nothing was exchanged
        buf[...] = src


def _doubling_gather(t, fold, buf, bounds):
    """Recursive-doubling all-gather among the active ranks, in place: after step k,
    active rank i holds the blocks of the 2^(k+1) active ranks sharing its bits above k."""
    me, distance = fold.new, 1
    while distance < fold.p:
        partner_new = me ^ distance
        mine = (me // distance) * distance
        theirs = (partner_new // distance) * distance
        t.sendrecv(buf[bounds[mine]:bounds[mine + distance]], fold.real(partner_new),
                   buf[bounds[theirs]:bounds[theirs + distance]], fold.real(partner_new))
        distance *= 2


def rabenseifner(t, x, out, op, ws):
    """Rabenseifner's all-reduce of x into out (x may be out): recursive-halving
    reduce-scatter, then recursive-doubling all-gather, over p blocks
    (`cc.partition(count, p)`).

    Each block is reduced at exactly one rank and then copied everywhere, so all ranks
    end bitwise equal.
    Cost: 2 log2 p steps (+2 for a non-power-of-two n); 2(p-1)/p of the buffer sent and
    received per rank and (p-1)/p reduced: bandwidth-optimal with logarithmic latency.
    """
    fold = Fold(t.rank, t.size)
    src = _fold_in(t, fold, x, out, op, ws)
    if fold.new is not None:
        bounds = partition(x.size, fold.p)
        _halving(t, fold, src, out, op, bounds, ws)
        _doubling_gather(t, fold, out, bounds)
    _fold_out(t, fold, out)


def reduce_scatter(t, x, out, op, offsets, ws):
    """Recursive-halving reduce-scatter: `out` gets block r of the reduction.

    Works in a scratch buffer (x is only read). After folding, active rank i owns the blocks of the
    rank(s) it stands for; after the halving, an odd folded rank sends its even partner
    that partner's block.
    Cost: log2 p steps (+2 with folding, the first of them the whole buffer); (p-1)/p of
    the buffer sent, received and reduced per active rank.
    """
    work = ws.get("rs_work", x.size, x)
    fold = Fold(t.rank, t.size)
    src = _fold_in(t, fold, x, work, op, ws)
    r = t.rank
    if fold.new is not None:
        _halving(t, fold, src, work, op, _group_bounds(fold, offsets), ws)
        if fold.partner is not None:
            p = fold.partner
            t.sendrecv(work[offsets[p]:offsets[p + 1]], p, None, None)
        out[...] = work[offsets[r]:offsets[r + 1]]
    else:
        t.sendrecv(None, None, out, fold.partner)


def allgather(t, buf, offsets, ws=None):
    """Recursive-doubling all-gather in place (block r of `buf` is this rank's).

    Folded even ranks first give their block to their odd partner (which then holds a
    contiguous pair of blocks) and get the whole buffer back at the end.
    Cost: log2 p steps (+2 with folding); (n-1)/n of the buffer received per rank.
    """
    fold = Fold(t.rank, t.size)
    r = t.rank
    if fold.partner is not None:
        if fold.new is None:
            t.sendrecv(buf[offsets[r]:offsets[r + 1]], fold.partner, None, None)
        else:
            p = fold.partner
            t.sendrecv(None, None, buf[offsets[p]:offsets[p + 1]], p)
    if fold.new is not None:
        _doubling_gather(t, fold, buf, _group_bounds(fold, offsets))
    _fold_out(t, fold, buf)
