"""Simulated runs: Communicators over the simulated transport, on a virtual clock.

    from collectives.simulation import Network, simulate
    run = simulate(1024, lambda comm: comm.allreduce(x[comm.rank], algorithm="ring"),
                   Network(alpha=5e-6, beta=1 / 12.5e9, gamma=1 / 50e9),
                   sizes=[1 << 10, 1 << 20, 256 << 20], real_nbytes=x[0].nbytes)
    run.results, run.time        # every rank's real result; seconds per simulated size

The transport and its clock are collectives/transport/simulated.py (its docstring says how
time is counted); this module builds one Communicator per simulated rank on top of it and
charges reductions to the virtual clock through the Communicator's observer hook.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .communicator import Communicator
from .observe import Observer
from .trace import Recorder
from .transport.simulated import Network, SimulatedWorld, SizeDependent

__all__ = ["Network", "SizeDependent", "Simulation", "simulate"]


@dataclass
class Simulation:
    """What one simulated run gives: every rank's return value, every rank's final clock
    (ranks x sizes), the events (record=True), the message count and baton hand-overs."""
    results: list
    clocks: np.ndarray
    events: list
    messages: int
    handovers: int

    @property
    def time(self) -> np.ndarray:
        """Seconds per simulated size: the last rank's clock."""
        return self.clocks.max(axis=0)


class VirtualReductions(Observer):
    """Charges every reduction of a communicator to its simulated endpoint's clock."""
    watches_reductions = True

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def reduce(self, dst, src, op, reverse, inner):
        inner(dst, src, op, reverse)
        self.endpoint.charge_reduction(dst, src, op)
        return dst


def simulate(size: int, fn: Callable[[Communicator], Any], network: Optional[Network] = None,
             sizes: Sequence[float] = (1,), real_nbytes: float = 1, record: bool = False,
             keep_data: bool = False, pipeline_chunks: Optional[int] = None) -> Simulation:
    """Run fn(comm) on `size` simulated ranks (a Communicator over SimulatedTransport each)
    with one virtual clock per entry of `sizes`: every real byte counts as
    sizes[i] / real_nbytes virtual bytes. record=True keeps trace events (collectives.trace
    format, virtual seconds of sizes[0]); keep_data also keeps message contents;
    pipeline_chunks fixes the chunk count of the pipelined algorithms.
    Returns a Simulation; re-raises the first rank's own error (SizeDependent included).
    """
    recorder_for = None
    if record:
        def recorder_for(endpoint):
            return Recorder(endpoint.rank, clock=lambda: float(endpoint.clock[0]), keep_data=keep_data)
    world = SimulatedWorld(size, network or Network(), sizes, real_nbytes, pipeline_chunks, recorder_for)
    results = world.run(lambda endpoint: fn(_communicator(endpoint)))
    endpoints = world.endpoints
    events = [e for endpoint in endpoints for e in endpoint.recorder.events] if record else []
    return Simulation(results, np.array([e.clock for e in endpoints]), events,
                      sum(e.messages for e in endpoints), world.handovers)


def _communicator(endpoint):
    """The Communicator of one simulated rank, its reductions on the virtual clock."""
    comm = Communicator(endpoint, timeout=None, flight_dir="(simulated: no flight records)")
    comm.add_observer(VirtualReductions(endpoint))
    return comm
