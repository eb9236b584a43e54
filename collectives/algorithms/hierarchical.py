"""Hierarchical all-reduce: ring inside each node, ring across nodes, ring inside again.

Ranks are grouped into nodes of g consecutive ranks (the transport's `ranks_per_node`).
Across nodes the links are slow; this schedule sends only 1/g of the buffer over them,
and every rank of a node uses its own inter-node link at the same time (one NIC per rank,
as on rail-optimised GPU clusters), where a flat ring pays the slow link at every one of
its 2(n-1) steps.
"""
from ..partition import block, partition
from ..transport import objects
from . import ring, shm


class Group:
    """Transport `t` seen from inside a group of its ranks: `members` lists the group's
    ranks (a range or list), and group rank i is t's rank members[i]. Lets the ring
    functions run unchanged on a node, or on the ranks with the same place in every node.

    A full transport: only the group's ranks take part in its calls (barrier and object
    exchange go point to point). It declares t's capabilities less those that describe
    all of t's ranks (node size, native collectives, shared segment); its timeout and
    step are t's. `segment`: a shared segment spanning exactly the group's ranks, declared
    as the group's own (a node's).
    """

    def __init__(self, t, members, segment=None):
        self.t, self.members = t, members
        self.rank, self.size = members.index(t.rank), len(members)
        self.capabilities = t.capabilities.replace(ranks_per_node=None, native=frozenset(), shared_segment=segment)

    @property
    def timeout(self):
        return self.t.timeout

    @property
    def step(self):
        return self.t.step

    def set_timeout(self, seconds):
        self.t.set_timeout(seconds)

    def begin_call(self, sequence, signature):
        self.t.begin_call(sequence, signature)

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        members = self.members
        self.t.sendrecv(sendbuf, None if dest is None else members[dest],
                        recvbuf, None if source is None else members[source])

    def isend(self, buf, dest):
        return self.t.isend(buf, self.members[dest])

    def irecv(self, buf, source):
        return self.t.irecv(buf, self.members[source])

    def waitall(self, requests):
        self.t.waitall(requests)

    def allgather_object(self, obj):
        """Every group rank's obj, in group rank order (2(size-1) messages each way)."""
        return objects.allgather_object(self, obj)

    def barrier(self):
        """Return once every rank of the group has entered it."""
        self.allgather_object(None)

    def free(self, together=True):
        """Nothing to release: the group owns none of t's resources."""

    def split(self, color, key=0, segment=True):
        """The group's ranks with the same color, as a Group of t (None: joins none; never
        a segment of its own, whatever `segment` says)."""
        entries = self.allgather_object((color, key, self.rank))
        if color is None:
            return None
        chosen = sorted((k, r) for c, k, r in entries if c == color)
        return Group(self.t, [self.members[r] for _, r in chosen])


def ranks_per_node(t):
    """The transport's node size g if it declares one that divides its size, else None."""
    g = t.capabilities.ranks_per_node
    return g if g and t.size % g == 0 else None


def allreduce(t, x, out, op, ws):
    """Hierarchical all-reduce of x into out (x may be out), on nodes of g ranks.

    1. Ring reduce-scatter inside the node: local rank j holds the node's sum of block j
       (cc.partition(count, g)) in out's block j.
    2. Ring all-reduce of block j across the N = n/g nodes, among the ranks with local
       rank j (g such rings run side by side): block j now holds every rank's sum.
    3. Ring all-gather inside the node: every rank holds every block.
    Where the transport's shared segment spans exactly this node's g ranks (one segment per
    node, real or emulated with cc.init(nodes=...)), steps 1 and 3 go through it instead
    (shm.reduce_scatter and shm.allgather: one sync point each per round, no messages),
    so only step 2 crosses nodes through messages.
    Each element is reduced along one chain per stage and then copied, so all ranks end
    bitwise equal.
    Cost: 2(g-1) intra-node steps moving 2(g-1)/g of the buffer, plus 2(N-1) inter-node
    steps moving 2(N-1)/N of 1/g of it; (g-1)/g + (N-1)/(N g) of it reduced.
    Without a known node size (g = n) this is the ring all-reduce.
    """
    n, r = t.size, t.rank
    g = ranks_per_node(t) or n
    node, local = divmod(r, g)
    segment = t.capabilities.shared_segment
    if segment is None or segment.closed or segment.size != g or segment.rank != local:
        segment = None
    inside = shm if segment is not None else ring
    intra = Group(t, range(node * g, node * g + g), segment)
    across = Group(t, range(local, n, g))
    offsets = partition(x.size, g)
    mine = block(out, offsets, local)
    inside.reduce_scatter(intra, x, mine, op, offsets, ws)
    ring.allreduce(across, mine, mine, op, ws)
    inside.allgather(intra, out, offsets)
