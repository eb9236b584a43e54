"""Prefix reductions: rank r gets the reduction of ranks 0..r (scan) or 0..r-1 (exscan).

    scan(t, buf, op, ws)      in place: buf becomes x_0 op x_1 op ... op x_r
    exscan(t, buf, op, ws)    in place: buf becomes x_0 op ... op x_{r-1}; rank 0's buf is
                              left as it is (the caller fills it)
Operands always combine with the lower ranks' data on the left, in one fixed order, so a
result does not depend on timing and every run gives the same bits.
"""
from .common import reduce_into


def scan(t, buf, op, ws):
    """Recursive-doubling (Hillis-Steele) inclusive scan.

    Step k (k = 1, 2, 4, ... < n): rank r sends its partial to r+k (if r+k < n) and
    receives the partial of r-k (if r-k >= 0), which it puts on the left of its own.
    Invariant: after step k, rank r holds the reduction of ranks max(0, r-2k+1)..r.
    Cost: ceil(log2 n) steps; each sends, receives and reduces the whole buffer.
    """
    n, r = t.size, t.rank
    incoming = ws.get("scan", buf.size, buf)
    k = 1
    while k < n:
        send_to = r + k if r + k < n else None
        source = r - k if r - k >= 0 else None
        if send_to is not None or source is not None:
            t.sendrecv(buf if send_to is not None else None, send_to,
                       incoming if source is not None else None, source)
        if source is not None:
            reduce_into(buf, incoming, op, reverse=True)
        k *= 2


def exscan(t, buf, op, ws):
    """Recursive-doubling exclusive scan, carrying the inclusive partial alongside.

    Step k as in `scan`: rank r sends its inclusive partial (ranks max(0, r-2k+1)..r
    after the step) to r+k and puts the partial received from r-k on the left of both
    its inclusive and its exclusive partial (the first one received starts the latter).
    Cost: ceil(log2 n) steps; each sends and receives the whole buffer and reduces it
    twice; one copy of the input.
    """
    n, r = t.size, t.rank
    inclusive = ws.get("exscan-inclusive", buf.size, buf)
    inclusive[...] = buf
    incoming = ws.get("exscan", buf.size, buf)
    started = False
    k = 1
    while k < n:
        send_to = r + k if r + k < n else None
        source = r - k if r - k >= 0 else None
        if send_to is not None or source is not None:
            t.sendrecv(inclusive if send_to is not None else None, send_to,
                       incoming if source is not None else None, source)
        if source is not None:
            if started:
                reduce_into(buf, incoming, op, reverse=True)
            else:
                buf[...] = incoming
                started = True
            reduce_into(inclusive, incoming, op, reverse=True)
        k *= 2
