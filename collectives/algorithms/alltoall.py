"""All-to-all: rank i's block j goes to rank j, and lands there as block i.

Every algorithm has the signature alltoall(t, x, out, send_offsets, recv_offsets, ws):
block j of x is x[send_offsets[j]:send_offsets[j+1]] (bound for rank j), and what rank i
sends here lands in out[recv_offsets[i]:recv_offsets[i+1]]. Nothing is reduced, so the
result is bitwise the data sent.
"""
import numpy as np

from ..partition import block


def pairwise(t, x, out, send_offsets, recv_offsets, ws=None):
    """Pairwise exchange: n-1 steps, each rank talking to one peer per step.

    Step s (1 <= s < n): rank r sends its block (r+s) mod n to rank (r+s) mod n and
    receives block r of rank (r-s) mod n from that rank. Before step s, rank r holds its
    own block and the blocks of ranks r-1, ..., r-s+1; its own block is copied first.
    Works for any counts (alltoallv): each step moves exactly one block each way.
    Cost: n-1 steps; every byte that leaves the rank is sent once, directly to its
    destination (best for large blocks: (n-1)/n of the buffer each way, no copies).
    """
    n, r = t.size, t.rank
    block(out, recv_offsets, r)[...] = block(x, send_offsets, r)
    for s in range(1, n):
        dest, source = (r + s) % n, (r - s) % n
        t.sendrecv(block(x, send_offsets, dest), dest, block(out, recv_offsets, source), source)


def linear(t, x, out, send_offsets, recv_offsets, ws=None):
    """All messages at once: every rank posts its n-1 receives and n-1 sends together
    and waits for all of them (what MPI's own all-to-all does for medium blocks).

    Cost: one round of n-1 messages each way per rank; the network orders them. Each
    byte moves once; peak of 2(n-1) outstanding messages per rank.
    """
    n, r = t.size, t.rank
    block(out, recv_offsets, r)[...] = block(x, send_offsets, r)
    peers = [(r + s) % n for s in range(1, n)]
    requests = [t.irecv(block(out, recv_offsets, (r - s) % n), (r - s) % n) for s in range(1, n)]
    requests += [t.isend(block(x, send_offsets, p), p) for p in peers]
    t.waitall(requests)


def bruck(t, x, out, send_offsets, recv_offsets, ws):
    """Bruck's algorithm (Bruck et al. 1997): ceil(log2 n) steps with local rotations.

    Blocks are padded to the widest block w (partition blocks differ by at most one
    element). Rotation: slot i of a scratch array holds the block bound for rank
    (r+i) mod n. Step k (k = 1, 2, 4, ... < n): rank r sends every slot i with bit k set
    to rank (r+k) mod n and receives the same slots from rank (r-k) mod n. A block in slot
    i has then travelled i & (2k-1) ranks forward, so after the last step slot i holds the
    block that rank (r-i) mod n sent to r. Inverse rotation: block j of the result is
    slot (r-j) mod n.
    Requires every block this rank receives to have the same length (all-to-all, not -v).
    Cost: ceil(log2 n) steps, each sending and receiving about n/2 padded blocks, so
    about (n/2)*w*log2(n) bytes each way (more than pairwise, in far fewer messages:
    best for small blocks); plus two local rotations of the buffer.
    """
    n, r = t.size, t.rank
    width = max(send_offsets[j + 1] - send_offsets[j] for j in range(n))
    own = recv_offsets[1] - recv_offsets[0]
    slots = ws.get("bruck", n * width, x).reshape(n, width)
    for i in range(n):
        piece = block(x, send_offsets, (r + i) % n)
        slots[i, :piece.size] = piece
    k = 1
    while k < n:
        moving = [i for i in range(n) if i & k]
        outgoing = ws.get("bruck-send", len(moving) * width, x).reshape(len(moving), width)
        incoming = ws.get("bruck-recv", len(moving) * width, x).reshape(len(moving), width)
        np.take(slots, moving, axis=0, out=outgoing)
        t.sendrecv(outgoing, (r + k) % n, incoming, (r - k) % n)
        slots[moving] = incoming
        k *= 2
    result = out.reshape(n, own) if own else None
    for j in range(n if own else 0):
        result[j] = slots[(r - j) % n, :own]
