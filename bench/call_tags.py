"""What the always-on call checking costs: all-reduce through the MPI transport as it is
(every message tagged with its call, every receive checked) against the same transport
with the checking taken out, interleaved in one job.

    mpirun -n 4 python -m bench.call_tags [--sizes 8,1M] [--rounds 30] [--iters 200]

Each round times `iters` all-reduces on each of the two communicators, in alternating
order; the table gives the median time per call over the rounds and the overhead.
"""
import argparse
import statistics
import time

import numpy as np
from mpi4py import MPI

import collectives as cc
from bench.common import human, parse_sizes
from collectives.transport.mpi import MPITransport, mpi_errors


class UncheckedMPITransport(MPITransport):
    """The MPI transport without call tags: untagged messages, receives not checked (what
    it was before the checking; here only to measure the checking's cost)."""

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        requests = []
        peer, what = (source, "receive from") if recvbuf is not None else (dest, "send to")
        with mpi_errors(lambda: f"rank {self.rank} posting to {what} rank {peer}"):
            if recvbuf is not None:
                requests.append(self.comm.Irecv([recvbuf, MPI.BYTE], source))
            if sendbuf is not None:
                requests.append(self.comm.Isend([sendbuf, MPI.BYTE], dest))
        self._complete(requests, peer, what)

    def isend(self, buf, dest):
        with mpi_errors(lambda: f"rank {self.rank} posting a send to rank {dest}"):
            return _Unchecked(self, self.comm.Isend([buf, MPI.BYTE], dest), dest, "send to")

    def irecv(self, buf, source):
        with mpi_errors(lambda: f"rank {self.rank} posting a receive from rank {source}"):
            return _Unchecked(self, self.comm.Irecv([buf, MPI.BYTE], source), source, "receive from")

    def waitall(self, requests):
        if not requests:
            return
        with mpi_errors(lambda: f"rank {self.rank} testing requests"):
            pending = [r for r in requests if not r.test()]
        if pending:
            self._complete([r.request for r in pending], pending[0].peer, pending[0].what)


class _Unchecked:
    __slots__ = ("transport", "request", "peer", "what")

    def __init__(self, transport, request, peer, what):
        self.transport, self.request, self.peer, self.what = transport, request, peer, what

    def wait(self):
        self.transport.waitall([self])

    def test(self):
        return self.request.Test()


def time_calls(comm, x, algorithm, iters):
    """Seconds per all-reduce, over `iters` calls started together on every rank."""
    comm.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        comm.allreduce(x, algorithm=algorithm)
    return (time.perf_counter() - start) / iters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("8,1M"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--algorithm", default="auto")
    args = parser.parse_args(argv)
    checked = cc.init()
    unchecked = cc.Communicator(UncheckedMPITransport(MPI.COMM_WORLD.Dup()), timeout=checked.timeout)
    if checked.rank == 0:
        print(f"# {checked.size} ranks, algorithm {args.algorithm}, {args.rounds} rounds of {args.iters} calls")
        print(f"{'size':>10} {'checked us':>11} {'unchecked us':>13} {'overhead':>9}")
    for size in args.sizes:
        x = np.zeros(max(1, size // 4), np.float32)      # stays 0 however often reduced
        iters = max(5, min(args.iters, args.iters * 65536 // max(size, 1)))
        times = {"checked": [], "unchecked": []}
        for round_ in range(args.rounds):
            order = [("checked", checked), ("unchecked", unchecked)]
            for name, comm in order if round_ % 2 else order[::-1]:
                times[name].append(time_calls(comm, x, args.algorithm, iters))
        a, b = (statistics.median(times[k]) * 1e6 for k in ("checked", "unchecked"))
        if checked.rank == 0:
            print(f"{human(x.nbytes):>10} {a:11.2f} {b:13.2f} {100 * (a / b - 1):+8.1f}%", flush=True)
    unchecked.free()
    checked.free()


if __name__ == "__main__":
    main()
