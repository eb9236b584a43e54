"""The transport conformance checks: what every transport and wrapper must do.

Each check is a function of one rank's transport `t`, run on every rank of a world at
once; it raises AssertionError (or the transport's error) when the transport breaks the
contract of collectives/transport/contract.py. tests/test_transport_contract.py runs them
over every in-process transport and wrapper; tests/contract_mpi.py over MPI under mpirun.
"""
import numpy as np

from collectives.errors import TransportError
from collectives.transport.contract import NATIVE_COLLECTIVES, Capabilities, Transport

DTYPES = ("float64", "float32", "float16", "int32", "uint8")


def check_identity(t):
    """rank and size, declared capabilities, the Protocol's calls."""
    assert isinstance(t, Transport), f"{type(t).__name__} lacks calls of the Transport protocol"
    assert isinstance(t.capabilities, Capabilities)
    assert 0 <= t.rank < t.size
    for name in t.capabilities.native:
        assert name in NATIVE_COLLECTIVES and callable(getattr(t, "native_" + name))
    ranks = t.allgather_object(t.rank)
    assert ranks == list(range(t.size)), ranks
    assert t.allgather_object(t.size) == [t.size] * t.size


def check_sendrecv_ring(t):
    """Every dtype moves bit for bit around a ring; None sides are allowed."""
    n, r = t.size, t.rank
    for dtype in DTYPES:
        mine = (np.arange(17) + 100 * r).astype(dtype)
        got = np.zeros(17, dtype)
        t.sendrecv(mine, (r + 1) % n, got, (r - 1) % n)
        assert got.tobytes() == (np.arange(17) + 100 * ((r - 1) % n)).astype(dtype).tobytes()
    if n > 1:                             # one-sided: even ranks send to the next, odd ones receive
        if r % 2 == 0 and r + 1 < n:
            t.sendrecv(np.full(3, r, np.int64), r + 1, None, None)
        elif r % 2 == 1:
            got = np.zeros(3, np.int64)
            t.sendrecv(None, None, got, r - 1)
            assert list(got) == [r - 1] * 3


def check_messages_match_in_posting_order(t):
    """Several nonblocking messages to one peer arrive in the order they were posted."""
    n, r = t.size, t.rank
    dest, source = (r + 1) % n, (r - 1) % n
    received = [np.zeros(5, np.float64) for _ in range(4)]
    recvs = [t.irecv(buf, source) for buf in received]
    sends = [t.isend(np.full(5, 10.0 * r + i), dest) for i in range(4)]
    t.waitall(recvs + sends)
    assert all(request.test() for request in recvs + sends)
    for i, buf in enumerate(received):
        assert list(buf) == [10.0 * source + i] * 5, (i, buf)
    empty = [t.irecv(np.zeros(0), source), t.isend(np.zeros(0), dest)]
    empty[0].wait()                       # a receive first: sends may complete only once received
    empty[1].wait()


def check_barrier_and_objects(t):
    """barrier returns on every rank; objects of any picklable kind come back in rank order."""
    t.barrier()
    objects = t.allgather_object({"rank": t.rank, "data": list(range(t.rank))})
    assert objects == [{"rank": q, "data": list(range(q))} for q in range(t.size)]
    t.barrier()


def check_split(t):
    """split by parity, ranked by descending key; color None leaves a rank out."""
    n, r = t.size, t.rank
    if not t.capabilities.can_split:
        return
    sub = t.split(r % 2, key=-r)
    same = [q for q in range(n) if q % 2 == r % 2]
    assert sub.size == len(same) and sub.rank == sorted(same, reverse=True).index(r)
    assert isinstance(sub, Transport) and isinstance(sub.capabilities, Capabilities)
    assert sub.allgather_object(r) == sorted(same, reverse=True)
    got = np.zeros(2)
    sub.sendrecv(np.full(2, float(r)), (sub.rank + 1) % sub.size, got, (sub.rank - 1) % sub.size)
    assert got[0] == sorted(same, reverse=True)[(sub.rank - 1) % sub.size]
    alone = t.split(None if r == 0 else 1)
    assert (alone is None) == (r == 0)
    if alone is not None:
        assert alone.size == n - 1 and alone.rank == r - 1


def check_call_state(t):
    """set_timeout is what timeout reads; begin_call restarts the step count."""
    before = t.timeout
    t.set_timeout(7.5)
    assert t.timeout == 7.5
    t.set_timeout(None)
    assert t.timeout is None
    t.set_timeout(before)
    t.begin_call(1, ("allreduce", 4, "float64", "sum", "ring"))
    assert t.step == 0
    got = np.zeros(1)
    t.sendrecv(np.ones(1), (t.rank + 1) % t.size, got, (t.rank - 1) % t.size)
    assert t.step >= 1
    t.begin_call(2, ("barrier",))
    assert t.step == 0


def check_a_missing_message_is_an_error(t):
    """A receive nobody sends ends in TransportError (a timeout, or a deadlock the
    transport can see), never a hang. Rank 0 waits for rank 1, which sends nothing."""
    if t.size < 2:
        return None
    t.set_timeout(0.3)
    if t.rank != 0:
        return None
    try:
        t.irecv(np.zeros(4), 1).wait()
    except TransportError as error:
        return type(error).__name__
    raise AssertionError("a receive that nobody sent completed")


def check_a_longer_message_is_an_error(t):
    """A message longer than the posted receive is a TransportError on the receiver."""
    if t.size < 2 or t.rank > 1:
        return None
    t.set_timeout(5.0)
    try:
        if t.rank == 0:
            t.isend(np.zeros(8), 1).wait()
        else:
            t.irecv(np.zeros(4), 0).wait()
    except TransportError as error:
        return type(error).__name__
    return None


CHECKS = [check_identity, check_sendrecv_ring, check_messages_match_in_posting_order,
          check_barrier_and_objects, check_split, check_call_state]
FAULT_CHECKS = [check_a_missing_message_is_an_error, check_a_longer_message_is_an_error]
