"""Pipelined tree algorithms: latency logarithmic in n, bandwidth kept by pipelining chunks.

The tree is k-ary and rooted at `root` (see common.tree_links): arity 2 is the binary
tree, arity 1 a chain (the "pipeline" algorithms). The buffer is cut into chunks; while a
node works on chunk c its parent already works on chunk c-1, so a tree of depth D moves k
chunks in about D + k - 1 steps instead of D * k.
"""
from ..partition import chunk_bounds
from .common import reduce_into, tree_links


def reduce(t, work, op, root, ws, arity=2, chunks=1):
    """Reduce `work` into root's `work`, chunk by chunk, up a k-ary tree.

    Each node adds its children's partial sums of chunk c (in child order) to its own and
    sends the result to its parent. Receives of chunk c+1 are posted before chunk c is
    reduced (two scratch halves per child), so transfer and reduction overlap.
    Cost: about (D + chunks - 1) steps; every non-root rank sends the buffer once; a node
    receives and reduces the buffer once per child.
    """
    parent, children = tree_links(t.rank, t.size, root, arity)
    bounds = chunk_bounds(work.size, chunks)
    nchunks = len(bounds) - 1
    width = max(bounds[i + 1] - bounds[i] for i in range(nchunks))
    halves = 2 if nchunks > 1 else 1
    scratch = [ws.get(("tree", j), halves * width, work) for j in range(len(children))]

    def post(c):
        size = bounds[c + 1] - bounds[c]
        half = (c % 2) * width
        return [t.irecv(scratch[j][half:half + size], child) for j, child in enumerate(children)]

    sends = []
    pending = post(0) if children else []
    for c in range(nchunks):
        received = pending
        if children and c + 1 < nchunks:
            pending = post(c + 1)
        segment = work[bounds[c]:bounds[c + 1]]
        half = (c % 2) * width
        for j, request in enumerate(received):
            request.wait()
            reduce_into(segment, scratch[j][half:half + segment.size], op)
        if parent is not None:
            sends.append(t.isend(segment, parent))
    t.waitall(sends)


def broadcast(t, buf, root, ws=None, arity=2, chunks=1):
    """Broadcast root's `buf` down a k-ary tree, chunk by chunk, in place.

    All receives are posted at once (each chunk lands in its own place in `buf`); a node
    forwards chunk c to its children as soon as it has arrived.
    Cost: about (D + chunks - 1) steps; each non-leaf sends the buffer once per child.
    """
    parent, children = tree_links(t.rank, t.size, root, arity)
    bounds = chunk_bounds(buf.size, chunks)
    segments = [buf[bounds[c]:bounds[c + 1]] for c in range(len(bounds) - 1)]
    arrivals = [t.irecv(seg, parent) for seg in segments] if parent is not None else None
    sends = []
    for c, segment in enumerate(segments):
        if arrivals is not None:
            arrivals[c].wait()
        sends.extend(t.isend(segment, child) for child in children)
    t.waitall(sends)


def allreduce(t, x, out, op, ws, chunks=1):
    """Tree all-reduce of x into out (x may be out): pipelined binary-tree reduce to
    rank 0, then broadcast.

    Every element is reduced once, at the node where the subtrees meet, and rank 0's
    final buffer is broadcast, so all ranks get bitwise the same result.
    Cost: about 2(log2 n + chunks - 1) steps; each rank sends and receives the buffer
    about twice (up and down), the root's links the most.
    """
    if out is not x:
        out[...] = x
    reduce(t, out, op, 0, ws, arity=2, chunks=chunks)
    broadcast(t, out, 0, ws, arity=2, chunks=chunks)
