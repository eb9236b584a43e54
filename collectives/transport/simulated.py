"""The simulated transport: the real algorithms on up to thousands of in-process ranks,
timed by a virtual alpha-beta-gamma clock instead of the wall clock.

    from collectives.simulation import Network, simulate
    run = simulate(1024, lambda comm: comm.allreduce(x[comm.rank], algorithm="ring"),
                   Network(alpha=5e-6, beta=1 / 12.5e9, gamma=1 / 50e9),
                   sizes=[1 << 10, 1 << 20, 256 << 20], real_nbytes=x[0].nbytes)
    run.results, run.time        # every rank's real result; seconds per simulated size

Choices, and why:

* Real data, small; virtual bytes, large. 1024 ranks x 256 MB cannot be allocated, so
  every rank works on a small real buffer (real_nbytes, a few KB) and every message or
  reduction of b real bytes is charged b * size / real_nbytes virtual bytes. The results
  are real and checked; only the clock is scaled. Blocks are whole elements, so a real
  count divisible by the ring's n (and by p for the halving family) makes the scaling
  exact. Algorithms that plan by size (the pipelined trees pick their chunk count) ask
  `nominal_nbytes(buf)`, the virtual size, through algorithms.common.nominal_nbytes.
* Several sizes per run. A schedule that never asks for the nominal size is the same at
  every size, so one run carries one clock per size (numpy vectors): the 2(n-1) ring steps
  of 1024 ranks run once for all sizes. A schedule that asks raises SizeDependent when
  several sizes share a run; the caller then runs one size at a time.
* The clock follows messages, not threads (Hockney's single-port model, eager sends). A
  message of b bytes on link (a, d) costs c = alpha + b*beta of that link: it leaves when
  the sender's clock and its outgoing port allow, occupies that port for c, and arrives c
  later; it also occupies the receiver's one incoming port for c, so messages arriving
  together queue there. The receiver's clock becomes max(its clock, the end of that
  transfer). A reduction of b bytes adds b*gamma. So a ring step costs exactly
  alpha + (m/n)*beta, a node sending to (or receiving from) two children pays 2c, and the
  times of a schedule follow from its messages whatever order the threads ran in. The
  incoming port books transfers in the order the receiver waits for them and remembers
  only its last busy stretch: a message waited for late that fits before the stretch is
  taken to use the gap there, even if an earlier message used that gap (an approximation
  that the ring and the doubling/halving algorithms never meet).
* Two levels: with `ranks_per_node`, links between ranks of different nodes cost
  inter_alpha + b*inter_beta; each rank has its own ports (one NIC per rank).
* One rank runs at a time. Each rank is a thread, but a rank runs until it must wait for
  a message, then hands over to the next ready rank (a baton of per-rank locks): no lock
  contention, no wake-ups of 1024 waiters per message, and a deterministic order. Sends
  never block (eager), so a rank runs ahead as far as its messages allow and hand-overs are
  far fewer than messages. Waiting with nobody ready is a deadlock and raises at once. The
  in-process transport of the tests (transport/local.py) keeps rendezvous sends to catch
  schedules that would deadlock over MPI; this one trades that for scale.
"""
import gc
import threading
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

from .. import tuning
from ..errors import TransportError
from .channels import Channel
from .contract import CallState, Capabilities
from .simulated_segment import NodeFlags, SimulatedSegment

STACK_BYTES = 1 << 20     # per simulated rank; algorithms recurse little
RUN_AHEAD = 16            # sends a rank makes without waiting before it lets others run


class SizeDependent(Exception):
    """An algorithm asked for the nominal size while one run simulates several sizes."""


@dataclass(frozen=True)
class Network:
    """Link costs of a simulated network: seconds per message (alpha), per byte moved (beta),
    per byte reduced (gamma); with ranks_per_node, links between nodes cost inter_alpha and
    inter_beta instead (default: the same as inside). shared_memory: the ranks of each node
    share a segment (transport/simulated_segment.py), whose sync points cost shm_alpha and
    whose every byte passed costs shm_beta."""
    alpha: float = tuning.DEFAULT.alpha
    beta: float = tuning.DEFAULT.beta
    gamma: float = tuning.DEFAULT.gamma
    ranks_per_node: int = None
    inter_alpha: float = None
    inter_beta: float = None
    shm_alpha: float = tuning.DEFAULT.shm_alpha
    shm_beta: float = tuning.DEFAULT.shm_beta
    shared_memory: bool = True

    @classmethod
    def from_model(cls, model, **two_level):
        return cls(model.alpha, model.beta, model.gamma, shm_alpha=model.shm_alpha, shm_beta=model.shm_beta,
                   **two_level)

    @property
    def model(self):
        """The intra-node CostModel (what the algorithms plan with). The simulated memory
        has no caches: every pass through a segment costs shm_beta (cache_bytes 0)."""
        return tuning.CostModel(self.alpha, self.beta, self.gamma, self.shm_alpha, self.shm_beta, cache_bytes=0)

    @property
    def inter(self):
        """The CostModel of links between nodes (None on a one-level network)."""
        if not self.ranks_per_node:
            return None
        return tuning.CostModel(self.alpha if self.inter_alpha is None else self.inter_alpha,
                                self.beta if self.inter_beta is None else self.inter_beta, self.gamma)

    def same_node(self, a, b):
        g = self.ranks_per_node
        return not g or a // g == b // g


class _Message:
    __slots__ = ("payload", "arrival", "cost")

    def __init__(self, payload, arrival, cost):
        self.payload, self.arrival, self.cost = payload, arrival, cost


class _Baton:
    """Only one rank runs at a time: a waiting rank hands the run to the next ready one.

    gates[r] is held while rank r may not run; releasing it lets r continue.
    """

    def __init__(self, size):
        self.gates = [threading.Lock() for _ in range(size)]
        for gate in self.gates:
            gate.acquire()
        self.ready = deque()
        self.failure = None
        self.handovers = 0
        self.finished = 0
        self.running = 0          # the rank now running


    def start(self):
        self.ready.extend(range(1, len(self.gates)))
        self.gates[0].release()

    def enter(self, rank):
        self.gates[rank].acquire()
        self._check(rank)

    def _check(self, rank):
        if self.failure is not None:
            raise TransportError(f"simulated rank {rank} gave up because {self.failure}")

    def pause(self, rank):
        """Let the other ready ranks run first (bounds how far one rank runs ahead)."""
        if self.ready:
            self.ready.append(rank)
            self.wait(rank, "run again")

    def wait(self, rank, what):
        """Rank `rank` cannot go on until woken: run the next ready rank meanwhile."""
        if not self.ready:
            self.fail(f"of a deadlock: rank {rank} waits to {what} and every other rank waits or has "
                      "finished")
            self._check(rank)
        self.handovers += 1
        self.gates[self.ready.popleft()].release()
        self.gates[rank].acquire()
        self._check(rank)

    def leave(self, rank):
        """Rank `rank` is done: run the next ready rank (none while others wait: deadlock)."""
        if self.failure is not None:
            return
        self.finished += 1
        if self.ready:
            self.gates[self.ready.popleft()].release()
        elif self.finished < len(self.gates):
            self.fail(f"of a deadlock: rank {rank} finished and every other rank waits")

    def fail(self, reason):
        """Stop everything: every waiting rank wakes up and raises."""
        if self.failure is None:
            self.failure = reason
        for gate in self.gates:
            if gate.locked():
                try:
                    gate.release()
                except RuntimeError:      # released meanwhile by its own thread
                    pass


class _Fabric:
    """Shared state of one simulated world: channels, the baton, the network."""

    def __init__(self, size, network, sizes, real_nbytes, pipeline_chunks=None):
        self.size, self.network, self.pipeline_chunks = size, network, pipeline_chunks
        # Clocks are short lists of floats, one per size: faster than NumPy at this length.
        self.scale = [size / float(real_nbytes) for size in sizes]   # virtual bytes per real byte
        model, inter = network.model, network.inter or network.model
        self.intra = (model.alpha, [x * model.beta for x in self.scale])
        self.across = (inter.alpha, [x * inter.beta for x in self.scale])
        self.gamma = [x * model.gamma for x in self.scale]
        self.shm_beta = [x * network.shm_beta for x in self.scale]
        self.nodes = {}                       # node -> (its segment's regions, NodeFlags)
        self.costs = {}
        self.endpoints = []                   # filled by the endpoints, in rank order
        self.channels = defaultdict(Channel)   # (source, dest) -> Channel
        self.waiting = [None] * size          # what each blocked rank waits for
        self.baton = _Baton(size)
        self.gathered, self.gather_waiters = {}, []

    def cost(self, a, b, nbytes):
        """Seconds (a vector over sizes) that a message of nbytes real bytes takes on a -> b."""
        key = (self.network.same_node(a, b), nbytes)
        cost = self.costs.get(key)
        if cost is None:
            alpha, beta = self.intra if key[0] else self.across
            cost = self.costs[key] = [alpha + nbytes * b for b in beta]
        return cost

    def reduction(self, nbytes):
        """Seconds (a vector over sizes) that reducing nbytes real bytes takes."""
        cost = self.costs.get(nbytes)
        if cost is None:
            cost = self.costs[nbytes] = [nbytes * g for g in self.gamma]
        return cost

    def passing(self, nbytes):
        """Seconds (a vector over sizes) that one pass over nbytes real bytes of the shared
        segment takes."""
        key = ("pass", nbytes)
        cost = self.costs.get(key)
        if cost is None:
            cost = self.costs[key] = [nbytes * b for b in self.shm_beta]
        return cost

    def segment(self, endpoint):
        """`endpoint`'s handle on its node's shared segment (None without shared memory)."""
        if not self.network.shared_memory:
            return None
        g = self.network.ranks_per_node or self.size
        node, local = divmod(endpoint.rank, g)
        if node not in self.nodes:
            self.nodes[node] = (SimulatedSegment.create(g), NodeFlags(g, self.baton))
        regions, flags = self.nodes[node]
        return SimulatedSegment(regions, local, range(node * g, node * g + g), flags, endpoint)

    def deposit(self, src, dst, message):
        self.channels[(src, dst)].put(message)
        if self.waiting[dst] == src:
            self.waiting[dst] = None
            self.baton.ready.append(dst)

    def post(self, src, dst):
        return self.channels[(src, dst)].post()

    def take(self, src, dst, ticket):
        channel = self.channels[(src, dst)]
        while not channel.has(ticket):
            self.waiting[dst] = src
            self.baton.wait(dst, f"receive from rank {src}")
            self.endpoints[dst].ahead = 0
        return channel.take(ticket)

    def gather(self, endpoint, obj):
        """Every rank's obj once all have called (zero cost; clocks meet at the latest)."""
        self.gathered[endpoint.rank] = (obj, endpoint)
        if len(self.gathered) < self.size:
            self.gather_waiters.append(endpoint.rank)
            while endpoint.rank in self.gather_waiters:
                self.baton.wait(endpoint.rank, "gather objects")
            return self.result
        entries = [self.gathered[r] for r in range(self.size)]
        latest = [max(times) for times in zip(*(e.clock for _, e in entries))]
        for _, e in entries:
            e.clock = list(latest)
        self.result = [obj for obj, _ in entries]
        self.gathered = {}
        self.baton.ready.extend(self.gather_waiters)
        self.gather_waiters = []
        return self.result


class _SendRequest:
    __slots__ = ("endpoint", "arrival", "buf", "dest", "payload", "start")

    def __init__(self, endpoint, arrival, buf, dest, payload, start):
        self.endpoint, self.arrival, self.buf, self.dest = endpoint, arrival, buf, dest
        self.payload, self.start = payload, start

    def wait(self):
        endpoint = self.endpoint
        endpoint.step += 1
        start = float(endpoint.clock[0])
        endpoint.clock = [max(c, a) for c, a in zip(endpoint.clock, self.arrival)]
        if endpoint.recorder is not None:
            endpoint.recorder.message(start, float(endpoint.clock[0]), send=(self.buf, self.dest),
                                      sent=self.payload)

    def test(self):
        return True


class _RecvRequest:
    __slots__ = ("endpoint", "buf", "source", "ticket", "done")

    def __init__(self, endpoint, buf, source, ticket):
        self.endpoint, self.buf, self.source, self.ticket = endpoint, buf, source, ticket
        self.done = False

    def wait(self):
        if not self.done:
            self.done = True
            endpoint = self.endpoint
            start = float(endpoint.clock[0])
            endpoint.receive(self.buf, self.source, self.ticket)
            if endpoint.recorder is not None:
                endpoint.recorder.message(start, float(endpoint.clock[0]), recv=(self.buf, self.source),
                                          arrived=endpoint.arrived)

    def test(self):
        return self.done


class SimulatedTransport(CallState):
    """One simulated rank's endpoint (the interface of collectives.transport). It declares
    the network's node size and cost model, the nominal sizes it stands for, and a fixed
    pipeline chunk count if the run asked for one. The timeout does not apply: a wait
    that could never end is a deadlock, raised at once."""

    def __init__(self, fabric, rank, recorder=None):
        self.fabric, self.rank, self.size = fabric, rank, fabric.size
        zeros = [0.0] * len(fabric.scale)
        self.clock, self.egress = list(zeros), list(zeros)        # now; when the outgoing port is free
        self.in_from, self.in_until = list(zeros), list(zeros)    # the incoming port's last busy stretch
        self.recorder = recorder
        self.messages = 0
        self.arrived = 0.0      # when the last received message was in (size 0's clock)
        self.ahead = 0          # messages sent since this rank last waited
        fabric.endpoints.append(self)
        self.capabilities = Capabilities(ranks_per_node=fabric.network.ranks_per_node,
                                         cost_model=fabric.network.model, nominal_nbytes=self.nominal_nbytes,
                                         pipeline_chunks=fabric.pipeline_chunks, can_split=False,
                                         shared_segment=fabric.segment(self))

    def begin_call(self, sequence, signature):
        """As CallState's; the segment's flags carry the call from now on."""
        super().begin_call(sequence, signature)
        segment = self.capabilities.shared_segment
        if segment is not None:
            segment.begin_call(sequence, signature)

    def nominal_nbytes(self, buf):
        """The virtual size `buf` stands for (see the module docstring)."""
        if len(self.fabric.scale) != 1:
            raise SizeDependent("the schedule depends on the message size")
        return buf.nbytes * float(self.fabric.scale[0])

    # -- point to point -----------------------------------------------------------------
    def _post(self, buf, dest):
        cost = self.fabric.cost(self.rank, dest, buf.nbytes)
        self.egress = arrival = [max(c, e) + k for c, e, k in zip(self.clock, self.egress, cost)]
        payload = buf.copy()
        self.fabric.deposit(self.rank, dest, _Message(payload, arrival, cost))
        self.messages += 1
        self.ahead += 1
        if self.ahead >= RUN_AHEAD:      # sends never block: bound the messages in flight
            self.ahead = 0
            self.fabric.baton.pause(self.rank)
        return arrival, payload

    def receive(self, buf, source, ticket):
        self.step += 1
        message = self.fabric.take(source, self.rank, ticket)
        if message.payload.nbytes != buf.nbytes:
            raise TransportError(f"rank {source} sent {message.payload.nbytes} bytes to rank "
                                 f"{self.rank}, which expected {buf.nbytes}")
        payload = message.payload
        if payload.dtype != buf.dtype or payload.shape != buf.shape:
            payload = payload.view(buf.dtype).reshape(buf.shape)
        np.copyto(buf, payload, casting="no")
        # The incoming port is busy from in_from to in_until without a gap. A transfer that
        # ends before that (a message waited for later than it arrived) fits in the gap
        # before; any other queues after it, joining the busy stretch or starting a new one.
        clock, in_from, in_until = self.clock, self.in_from, self.in_until
        for i, (arrival, cost) in enumerate(zip(message.arrival, message.cost)):
            if arrival <= in_from[i]:
                done = arrival
            else:
                done = max(arrival, in_until[i] + cost)
                if done - cost > in_until[i]:
                    in_from[i] = done - cost
                in_until[i] = done
            if done > clock[i]:
                clock[i] = done
            if i == 0:
                self.arrived = done

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        start = float(self.clock[0])
        arrival = payload = None
        if sendbuf is not None:
            arrival, payload = self._post(sendbuf, dest)
        if recvbuf is not None:
            self.receive(recvbuf, source, self.fabric.post(source, self.rank))
        if arrival is not None:
            self.step += 1
            self.clock = [max(c, a) for c, a in zip(self.clock, arrival)]
        if self.recorder is not None:
            extra = {"arrived": self.arrived} if recvbuf is not None else {}
            self.recorder.message(start, float(self.clock[0]), send=(sendbuf, dest),
                                  recv=(recvbuf, source), sent=payload, **extra)

    def isend(self, buf, dest):
        start = float(self.clock[0])
        arrival, payload = self._post(buf, dest)
        return _SendRequest(self, arrival, buf, dest, payload, start)

    def irecv(self, buf, source):
        return _RecvRequest(self, buf, source, self.fabric.post(source, self.rank))

    @staticmethod
    def waitall(requests):
        for request in requests:
            request.wait()

    def charge_reduction(self, dst, src, op):
        """dst = dst <op> src just happened: charge gamma per byte, and record it."""
        start = self.clock[0]
        self.clock = [c + g for c, g in zip(self.clock, self.fabric.reduction(dst.nbytes))]
        if self.recorder is not None:
            self.recorder.reduction(start, float(self.clock[0]), dst, src, op)
        return dst

    # -- the shared segment (transport/simulated_segment.py) --------------------------------
    def charge_pass(self, view, owner):
        """One pass over `view`, a slot of rank `owner`'s region: charge shm_beta per byte,
        and record it (a read from `owner`, or a pass over this rank's own slot)."""
        start = self.clock[0]
        self.clock = [c + k for c, k in zip(self.clock, self.fabric.passing(view.nbytes))]
        if self.recorder is not None:
            self.recorder.segment_pass(start, float(self.clock[0]), view, owner)

    def join_sync(self, latest, posted_at, value):
        """A sync point every rank of the node posted, the last at clocks `latest`: this
        rank goes on shm_alpha after that (posted_at: when it posted it, for the record)."""
        alpha = self.fabric.network.shm_alpha
        self.step += 1
        self.clock = [max(c, t) + alpha for c, t in zip(self.clock, latest)]
        if self.recorder is not None:
            self.recorder.segment_sync(posted_at, float(self.clock[0]), value)

    # -- control plane -------------------------------------------------------------------
    def allgather_object(self, obj):
        return self.fabric.gather(self, obj)

    def barrier(self):
        self.allgather_object(None)


    def free(self, together=True):
        """Nothing to release: the simulation owns the shared state."""

    def split(self, color, key=0, segment=True):
        raise NotImplementedError("the simulated transport runs one communicator: split is not simulated")


class SimulatedWorld:
    """`size` simulated endpoints on one network; run(fn) runs fn(endpoint) on all of them.

    sizes/real_nbytes: one virtual clock per entry of sizes, every real byte counting as
    sizes[i] / real_nbytes virtual bytes; pipeline_chunks: declared by every endpoint;
    recorder_for(endpoint): its recorder of events, if any (something with the
    collectives.trace.Recorder methods message and reduction).
    """

    def __init__(self, size, network=None, sizes=(1,), real_nbytes=1, pipeline_chunks=None, recorder_for=None):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.size = size
        self.fabric = _Fabric(size, network or Network(), list(sizes), real_nbytes, pipeline_chunks)
        self.endpoints = [SimulatedTransport(self.fabric, rank) for rank in range(size)]
        if recorder_for is not None:
            for endpoint in self.endpoints:
                endpoint.recorder = recorder_for(endpoint)

    @property
    def handovers(self):
        """How often one rank handed the run to another."""
        return self.fabric.baton.handovers

    def run(self, fn):
        """fn(endpoint) on every rank, one at a time (see the module docstring); returns
        the results in rank order and re-raises the first rank's own error."""
        results, errors = [None] * self.size, [None] * self.size
        baton = self.fabric.baton

        def body(rank):
            try:
                baton.enter(rank)
                results[rank] = fn(self.endpoints[rank])
            except BaseException as exc:        # reported to the caller below
                errors[rank] = exc
                baton.fail(f"rank {rank} failed with {type(exc).__name__}: {exc}")
            finally:
                baton.leave(rank)
        self._run_threads(body)
        failed = [r for r, e in enumerate(errors) if e is not None]
        if failed:
            own = [r for r in failed if not isinstance(errors[r], TransportError)]
            raise errors[(own or failed)[0]]
        return results

    def _run_threads(self, body):
        previous = threading.stack_size(STACK_BYTES)
        try:
            threads = [threading.Thread(target=body, args=(r,), name=f"sim-rank-{r}", daemon=True)
                       for r in range(self.size)]
            for thread in threads:
                thread.start()
        finally:
            threading.stack_size(previous)
        collecting = gc.isenabled()
        gc.disable()              # millions of short-lived messages and no cycles: skip the GC passes
        try:
            self.fabric.baton.start()
            for thread in threads:
                thread.join()
        finally:
            if collecting:
                gc.enable()
