"""The simulated shared segment: the real segment code (collectives/transport/segment.py)
over plain arrays, timed by the simulator's virtual clock with a memory-bandwidth model.

Every simulated node (all ranks, or each `ranks_per_node` group of the network) gets one
segment, so the shared-memory algorithms (collectives/algorithms/shm.py) run unchanged and
`hierarchical` uses it inside each node. Time, per rank (collectives.tuning.CostModel's
shm_alpha and shm_beta, taken from the Network):

* a view of a slot (`staging`, `published`) is one pass over its bytes, a copy into the
  segment or out of it or a reduction's read of it: shm_beta per (virtual) byte, charged
  when the algorithm takes the view; a reduction of it costs gamma on top, as everywhere;
* a sync point (`post`, then `wait_all`) ends at the latest clock among the node's ranks
  when they posted it, plus shm_alpha.

So the schedules' times follow collectives.tuning.coefficients exactly (one round: the
segment's staging half holds the real buffer). While a rank waits for a sync point that a
peer has not posted yet, the next ready rank runs (the simulator's baton); waiting with
nobody ready is a deadlock, raised at once.
"""
from .segment import LocalSegment, Segment

REAL_BYTES = 1 << 20      # real bytes per rank: staging halves of 252 KiB hold the small real buffers


class NodeFlags:
    """The sync points of one simulated node: how many of its ranks posted each one, the
    latest of their clocks, and which ranks wait for it."""

    def __init__(self, size, baton):
        self.size, self.baton = size, baton
        self._points = {}        # sync value -> [posted, latest clock, waiting ranks, done]

    def post(self, value, clock):
        """A rank posted sync point `value` with its clock at that moment."""
        point = self._points.setdefault(value, [0, list(clock), [], 0])
        point[0] += 1
        point[1] = [max(a, b) for a, b in zip(point[1], clock)]
        if point[0] == self.size:
            self.baton.ready.extend(point[2])
            point[2] = []

    def wait(self, rank, value):
        """The latest clock at which the node's ranks posted `value`, once all have (rank
        `rank` runs others meanwhile)."""
        point = self._points[value]
        while point[0] < self.size:
            point[2].append(rank)
            self.baton.wait(rank, f"see every rank's shared-memory flag {value}")
        point[3] += 1
        if point[3] == self.size:       # everyone is past it: forget it
            del self._points[value]
        return point[1]


class SimulatedSegment(Segment):
    """One simulated rank's handle on its node's segment: the real Segment, whose views
    and sync points also advance `endpoint`'s virtual clock (see the module docstring)."""
    bindable = False          # every view is charged when taken

    def __init__(self, regions, rank, members, flags, endpoint):
        super().__init__(regions, rank, members=members)
        self.flags, self.endpoint = flags, endpoint
        self._posted_at = 0.0
        self._joined = 0

    @staticmethod
    def create(size):
        """The regions of one simulated node of `size` ranks."""
        return LocalSegment.create(size, REAL_BYTES)

    def staging(self, rank, parity, dtype, count, start=0):
        view = super().staging(rank, parity, dtype, count, start)
        self.endpoint.charge_pass(view, self.members[rank])
        return view

    def staging_all(self, parity, dtype, count):
        return [self.staging(j, parity, dtype, count) for j in range(self.size)]   # each one charged

    def published(self, rank, offset, dtype, count):
        view = super().published(rank, offset, dtype, count)
        self.endpoint.charge_pass(view, self.members[rank])
        return view

    def post(self, offset=0):
        value = super().post(offset)
        self._posted_at = float(self.endpoint.clock[0])
        self.flags.post(value, self.endpoint.clock)
        return value

    def wait_all(self, timeout):
        self._join()
        return super().wait_all(timeout)     # every flag is up: reads them and checks the call

    # Waiting for peers one at a time is modelled as waiting for all of them at the first
    # such wait of a sync point (the formulas price a sync point as one alpha either way).
    def wait_for(self, peer, timeout):
        self._join()
        return super().wait_for(peer, timeout)

    def _join(self):
        value = self.syncs
        if self._joined != value:
            latest = self.flags.wait(self.members[self.rank], value)
            self.endpoint.join_sync(latest, self._posted_at, value)
            self._joined = value
