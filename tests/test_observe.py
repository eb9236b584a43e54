"""The observer hook (collectives.observe): what an observer sees, and that it is the only
way the communicator's transport changes."""
import numpy as np
import pytest

import collectives as cc
from collectives.observe import ByteCounter, Observer


class Log(Observer):
    watches_reductions = True

    def __init__(self):
        self.calls, self.reductions = [], 0

    def call_started(self, sequence, signature):
        self.calls.append(("start", sequence, signature[0]))

    def call_ended(self, sequence, signature, error):
        self.calls.append(("end", sequence, type(error).__name__ if error else None))

    def reduce(self, dst, src, op, reverse, inner):
        self.reductions += 1
        return inner(dst, src, op, reverse)


def test_an_observer_sees_each_call_and_reduction_until_removed():
    def body(comm):
        log = Log()
        comm.allreduce(np.ones(8), algorithm="ring")            # before: not seen
        comm.add_observer(log)
        result = comm.allreduce(np.ones(8), algorithm="ring")
        comm.barrier()
        with pytest.raises(ValueError):
            comm.reduce_scatter(np.ones(8), out=np.ones(8))       # refused before it starts: no call
        comm.remove_observer(log)
        comm.allreduce(np.ones(8), algorithm="ring")            # after: not seen
        return log.calls, log.reductions, result
    for calls, reductions, result in cc.run_threads(3, body):
        assert calls == [("start", 2, "allreduce"), ("end", 2, None), ("start", 3, "barrier"), ("end", 3, None)]
        assert reductions == 2 and list(result) == [3.0] * 8     # ring: n-1 reduce steps


def test_a_failing_call_is_reported_with_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLECTIVES_FLIGHT_DIR", str(tmp_path))
    class Failing(Observer):
        def __init__(self):
            self.errors = []

        def call_ended(self, sequence, signature, error):
            self.errors.append(type(error).__name__ if error else None)

    def body(comm):
        observer = Failing()
        comm.add_observer(observer)
        if comm.rank == 0:
            with pytest.raises(cc.CollectiveTimeout):
                comm.allreduce(np.ones(4), algorithm="ring")      # rank 1 never joins
        return observer.errors
    errors = cc.run_threads(2, body, timeout=0.5)
    assert errors == [["TransportTimeout"], []]


def test_byte_counter_counts_what_the_ring_sends():
    n, count = 4, 4096

    def body(comm):
        counter = ByteCounter()
        comm.add_observer(counter)
        comm.allreduce(np.ones(count), algorithm="ring")
        return counter.sent, counter.messages
    for sent, messages in cc.run_threads(n, body):
        assert sent == 2 * (n - 1) * (count // n) * 8 and messages == 2 * (n - 1)


def test_removing_an_unknown_observer_is_an_error_and_transport_is_read_only():
    def body(comm):
        with pytest.raises(ValueError, match="not an observer"):
            comm.remove_observer(Observer())
        with pytest.raises(AttributeError):
            comm.transport = None
        return True
    assert cc.run_threads(2, body) == [True, True]
