"""mpirun -n 4 python -m bench.callpath [-s 8,4K,64K] [-n 500] [-r 10]

Where a small all-reduce's time goes when ranks share the node: per size, three
contenders, each timed as turns of back-to-back calls (all ranks together, a barrier
before each turn, the contenders' order changing from round to round):

  comm.allreduce  the whole call, one-shot through the shared segment (a plain
                  synchronous call runs its plan's prepared form)
  one-shot body   that prepared form alone (collectives.algorithms.prepare): copy in,
                  post, wait for every peer, reduce the n copies; none of the call's
                  argument checks, plan lookup, numbering, flight record or call tag
  mpi4py          MPI_Allreduce straight from mpi4py

Prints each contender's median turn in microseconds per call, MPI's time over each of
ours, and how many contenders got a wrong result (each is checked once more after its
turns: every element must be the number of ranks). The difference between the first
two is what the call itself costs at this world size; at one rank the same path costs a
few microseconds (`python -m bench.percall`), but when ranks outnumber cores every call
runs each rank once per core switch, on caches the other rank just filled.

The body runs outside the Communicator, which is sound only because every rank runs the
same calls in the same order (its flags keep the tag of the last real call).
"""
import argparse
import statistics
import sys

import numpy as np

from .common import interleaved, parse_sizes, placement, start

CONTENDERS = ("comm.allreduce", "one-shot body", "mpi4py")


def contenders(comm, mpi, nbytes, calls):
    """({name: a function making `calls` all-reduces of float32 sums of nbytes}, out: the
    array they all write), or None where the one-shot path does not apply (one rank, no
    shared segment, or nbytes larger than its limit)."""
    from mpi4py import MPI

    from collectives.algorithms import prepare
    x = np.ones(max(1, nbytes // 4), np.float32)
    out = np.empty_like(x)
    body = prepare("allreduce", "oneshot", comm.transport, x, "sum")
    if body is None or "oneshot" not in comm.algorithms("allreduce"):
        return None

    def repeated(call):
        def turn():
            for _ in range(calls):
                call()
        return turn
    return {"comm.allreduce": repeated(lambda: comm.allreduce(x, out=out, algorithm="oneshot")),
            "one-shot body": repeated(lambda: body(x, out)),
            "mpi4py": repeated(lambda: mpi.Allreduce(x, out, op=MPI.SUM))}, out


def wrong_results(comm, steps, out):
    """How many of the contenders (one turn each, checked after it) left anything but
    comm.size (the sum of n ones) in out, on any rank."""
    wrong = 0
    for step in steps.values():
        out[...] = 0
        step()
        wrong += not np.all(out == comm.size)
    return max(comm.allgather_object(wrong))


def per_call_us(comm, samples, calls):
    """{name: the slowest rank's median turn, in microseconds per call}."""
    medians = {name: statistics.median(seconds for seconds, _ in turns) for name, turns in samples.items()}
    every_rank = comm.allgather_object(medians)
    return {name: max(rank[name] for rank in every_rank) / calls * 1e6 for name in medians}


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m bench.callpath", description=__doc__.split("\n\n")[1])
    parser.add_argument("-s", "--sizes", type=parse_sizes, default=parse_sizes("8,4K,64K"),
                        help="comma-separated sizes in bytes (8, 4K, 64K)")
    parser.add_argument("-n", "--calls", type=int, default=500, help="back-to-back calls per turn")
    parser.add_argument("-r", "--rounds", type=int, default=10, help="turns per contender")
    args, comm, say = start(parser, argv, out)
    from mpi4py import MPI
    say(placement(comm))
    say(f"# all-reduce (float32 sum) at {comm.size} ranks: microseconds per call, median of "
        f"{args.rounds} turns of {args.calls} calls; MPI's time over ours")
    say(f"# {'size (B)':>10} {'comm.allreduce':>15} {'one-shot body':>14} {'mpi4py':>8} "
        f"{'MPI/call':>9} {'MPI/body':>9} {'#wrong':>6}")
    for nbytes in args.sizes:
        made = contenders(comm, MPI.COMM_WORLD, nbytes, args.calls)
        if made is None:
            say(f"# {nbytes:>10}  the one-shot path does not apply here (one rank, no shared "
                f"segment, or larger than its limit)")
            continue
        steps, result = made
        us = per_call_us(comm, interleaved(comm, steps, args.rounds, 1), args.calls)
        call, body, mpi = (us[name] for name in CONTENDERS)
        wrong = wrong_results(comm, steps, result)
        say(f"  {nbytes:>10} {call:>15.1f} {body:>14.1f} {mpi:>8.1f} {mpi / call:>9.2f} {mpi / body:>9.2f} {wrong:>6}")
    comm.free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
