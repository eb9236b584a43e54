"""python -m bench.simulate -n 1024 --sizes 1K,1M,256M [--collective allreduce] [-a ring,tree]
       [--alpha S] [--beta S_PER_BYTE] [--gamma S_PER_BYTE]
       [--ranks-per-node 8 --inter-alpha S --inter-beta S_PER_BYTE]
       [--shm-alpha S --shm-beta S_PER_BYTE | --no-shm] [--trace FILE] [--json FILE]

Runs the real algorithm code on n simulated ranks in this process (transport/simulated.py)
and reports, per algorithm and size, the simulated time next to the textbook formula's
(collectives.tuning.predict), algbw and busbw as nccl-tests define them, the messages
sent and the number of wrong result elements. The network defaults to the tuning file's
fitted alpha, beta, gamma (python -m bench.tune), else the built-in defaults.

Every rank holds a small real buffer (a few thousand float32 elements: --count) whose
bytes stand for the simulated size, so 1024 ranks x 256 MB needs about 16 KB per rank;
the results are checked against the exact sum. With --ranks-per-node, links between nodes
cost --inter-alpha/--inter-beta and the "hierarchical" all-reduce joins in.

The ranks of each node (all of them without --ranks-per-node) share a segment, modelled
by a memory bandwidth (transport/simulated_segment.py): a sync point costs --shm-alpha, a
byte passed through it --shm-beta, so the shared-memory algorithms (oneshot, twoshot,
shm_ring, "shm") are listed with times on their formulas, and "hierarchical" runs its node
stages through it. --no-shm: no segment (messages only). "-a all" leaves shm_ring out
above RING_NODE_LIMIT ranks per node: its n sync points a call cost the simulator minutes
at a thousand ranks.
"""
import argparse
import json
import math
import sys
import time

import numpy as np

from bench.common import algorithm_names, count_wrong, fill, human, parse_sizes
from collectives import partition, tuning
from collectives.partition import largest_power_of_two
from collectives.simulation import Network, SizeDependent, simulate

MIN_COUNT = 4096
RING_NODE_LIMIT = 64          # "all" leaves shm_ring out above this many ranks per node


def collective_spec(name):
    """The benchmark's description of collective `name` (buffers, run call, bus factor)."""
    import importlib
    module = importlib.import_module(f"bench.{name}")
    return getattr(module, name.upper())


def real_count(n, collective, override=None):
    """Elements of the real vector: divisible by n (and by p, the power of two the halving
    family folds onto, when that stays small) so that block sizes scale exactly."""
    if override:
        return override
    p = largest_power_of_two(n)
    unit = n * p // math.gcd(n, p)
    if unit > 1 << 16:
        unit = n
    return unit * max(1, -(-max(MIN_COUNT, n) // unit))


def expected_results(collective, inputs, root):
    """rank -> the float64 result it should end with (None: unspecified)."""
    if collective == "allgather":
        gathered = np.concatenate(inputs).astype(np.float64)
        return lambda rank: gathered
    if collective == "broadcast":
        return lambda rank: inputs[root].astype(np.float64)
    if collective in ("alltoall", "gather", "scatter"):
        return _movement_results(collective, inputs, root)
    total = np.zeros(inputs[0].size, np.float64)
    for x in inputs:
        total += x
    if collective == "reduce_scatter":
        offsets = partition(total.size, len(inputs))
        return lambda rank: total[offsets[rank]:offsets[rank + 1]]
    if collective == "reduce":
        return lambda rank: total if rank == root else None
    return lambda rank: total


def _movement_results(collective, inputs, root):
    """rank -> expected result of the pure data-movement collectives."""
    n = len(inputs)
    if collective == "gather":
        gathered = np.concatenate(inputs).astype(np.float64)
        return lambda rank: gathered if rank == root else None
    offsets = partition(inputs[root].size, n)
    if collective == "scatter":
        return lambda rank: inputs[root][offsets[rank]:offsets[rank + 1]].astype(np.float64)
    return lambda rank: np.concatenate([x[offsets[rank]:offsets[rank + 1]] for x in inputs]).astype(np.float64)


def run_one(spec, algorithm, n, network, sizes, count, root=0, record=False):
    """Simulate one algorithm at all sizes: one run if its schedule does not depend on the
    size, else one run per size. Returns (times per size, wrong elements, messages, events)."""
    dtype = np.float32
    inputs = [fill(r, spec.count_for(count * 4, n, 4), dtype, "sum") for r in range(n)]
    expected = expected_results(spec.name, inputs, root)
    real_nbytes = count * np.dtype(dtype).itemsize

    def body(comm):
        x, out = spec.arguments(inputs[comm.rank].copy(), n, comm.rank, False)
        if comm.transport.recorder is not None:
            comm.transport.recorder.name_buffers(x=x, out=out)
        return spec.run(comm, x, out, "sum", root, algorithm, False)

    try:
        runs = [(list(range(len(sizes))), simulate(n, body, network, sizes, real_nbytes, record=record))]
    except SizeDependent:
        runs = [([i], simulate(n, body, network, [s], real_nbytes, record=record and i == 0))
                for i, s in enumerate(sizes)]
    times, wrong, messages = [0.0] * len(sizes), 0, []
    for indices, sim in runs:
        for i, t in zip(indices, sim.time):
            times[i] = float(t)
        wrong += sum(count_wrong(result, expected(rank)) for rank, result in enumerate(sim.results))
        messages.append(sim.messages)
    return times, wrong, messages, runs[0][1].events


def formula(collective, algorithm, size, n, network):
    """The textbook prediction for this network, or None where there is no formula."""
    try:
        return tuning.predict(collective, algorithm, size, n, network.model,
                              ranks_per_node=network.ranks_per_node,
                              inter=network.inter if network.inter_alpha is not None
                              or network.inter_beta is not None else None,
                              shared_memory=network.shared_memory)
    except ValueError:
        return None


def describe(network):
    def rate(beta):
        return f"{1 / beta / 1e9:.3g} GB/s" if beta > 0 else "free"
    text = (f"alpha {network.alpha * 1e6:.3g} us, beta {network.beta * 1e9:.3g} ns/B "
            f"({rate(network.beta)}), gamma {network.gamma * 1e9:.3g} ns/B ({rate(network.gamma)})")
    if network.ranks_per_node:
        inter = network.inter
        text += (f"; {network.ranks_per_node} ranks per node, between nodes alpha "
                 f"{inter.alpha * 1e6:.3g} us, beta {inter.beta * 1e9:.3g} ns/B ({rate(inter.beta)})")
    if network.shared_memory:
        text += (f"; shared segment per node: sync {network.shm_alpha * 1e6:.3g} us, "
                 f"{network.shm_beta * 1e9:.3g} ns/B passed ({rate(network.shm_beta)})")
    return text


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__.split("\n\n")[1])
    parser.add_argument("-n", "--ranks", type=int, default=1024, help="simulated ranks")
    parser.add_argument("--sizes", default="1K,1M,256M", help="comma-separated sizes, e.g. 1K,1M,256M")
    parser.add_argument("--collective", default="allreduce",
                        choices=("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce",
                                 "alltoall", "gather", "scatter"))
    parser.add_argument("-a", "--algorithms", default="all", help="comma-separated, or 'all'")
    parser.add_argument("-r", "--root", type=int, default=0)
    model = tuning.current().model
    parser.add_argument("--alpha", type=float, default=model.alpha, help="seconds per message")
    parser.add_argument("--beta", type=float, default=model.beta, help="seconds per byte moved")
    parser.add_argument("--gamma", type=float, default=model.gamma, help="seconds per byte reduced")
    parser.add_argument("--ranks-per-node", type=int, default=None,
                        help="ranks per node: a two-level network (and the hierarchical all-reduce)")
    parser.add_argument("--inter-alpha", type=float, default=None, help="alpha between nodes")
    parser.add_argument("--inter-beta", type=float, default=None, help="beta between nodes")
    parser.add_argument("--shm-alpha", type=float, default=model.shm_alpha,
                        help="seconds per shared-memory sync point")
    parser.add_argument("--shm-beta", type=float, default=model.shm_beta,
                        help="seconds per byte passed through the shared segment")
    parser.add_argument("--no-shm", action="store_true", help="no shared segment in the nodes")
    parser.add_argument("--count", type=int, default=None, help="real elements per rank (default: auto)")
    parser.add_argument("--trace", metavar="FILE", help="Chrome trace of the first size (small n!)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    return parser


def main(argv=None, out=sys.stdout):
    """Simulate every chosen algorithm at every size and print the table; returns the exit
    status (1 if any result was wrong)."""
    args = build_parser().parse_args(argv)
    n, sizes, network, algorithms, left_out = checked_setup(args)
    spec = collective_spec(args.collective)
    count = real_count(n, args.collective, args.count)

    def say(text=""):
        print(text, file=out, flush=True)
    say(f"# bench.simulate: {args.collective} on {n} simulated ranks; {describe(network)}")
    say(f"# real data: {count} float32 elements ({count * 4} B) stand for each size; results checked exactly")
    if left_out:
        say(f"# shm_ring left out above {RING_NODE_LIMIT} ranks per node (n sync points a call); -a shm_ring runs it")
    say("#")
    say(f"# {'size':>10}  {'algorithm':<19} {'time (us)':>12} {'formula (us)':>13} {'sim/formula':>11} "
        f"{'algbw (GB/s)':>12} {'busbw (GB/s)':>12} {'messages':>9} {'#wrong':>6}")
    rows, events, walls = simulate_all(spec, algorithms, network, sizes, count, args)
    by_size = {}
    for row in rows:
        by_size.setdefault(row["size"], []).append(row)
    for size in sizes:
        for row in by_size[size]:
            say(format_row(row))
    say("#")
    best = [f"{human(s)}: {min(by_size[s], key=lambda r: r['time'])['algorithm']}" for s in sizes]
    say(f"# fastest (simulated): {', '.join(best)}")
    say(f"# wall time: {', '.join(f'{a} {w:.1f} s' for a, w in walls.items())}")
    wrong = sum(r["wrong"] for r in rows if r["size"] == sizes[0])
    say(f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}")
    if args.trace:
        from collectives import trace
        trace.write_chrome(args.trace, events, {"simulated": True, "size": sizes[0], "ranks": n})
        say(f"# trace of the {human(sizes[0])} runs (virtual time): {args.trace}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"world_size": n, "collective": args.collective, "network": vars(network),
                       "count": count, "results": rows}, handle, indent=1)
    return 1 if wrong else 0


def checked_setup(args):
    """(n, sizes, network, algorithms, the valid ones "all" leaves out) from the flags;
    exits naming the first bad one."""
    n = args.ranks
    if n < 1:
        raise SystemExit("-n must be at least 1")
    if args.ranks_per_node is not None and (args.ranks_per_node < 1 or n % args.ranks_per_node):
        raise SystemExit(f"--ranks-per-node must divide -n ({n}), got {args.ranks_per_node}")
    if (args.inter_alpha is not None or args.inter_beta is not None) and not args.ranks_per_node:
        raise SystemExit("--inter-alpha/--inter-beta need --ranks-per-node")
    network = Network(args.alpha, args.beta, args.gamma, args.ranks_per_node, args.inter_alpha, args.inter_beta,
                      args.shm_alpha, args.shm_beta, shared_memory=not args.no_shm)
    valid = algorithm_names(args.collective, n, args.ranks_per_node, network.shared_memory)
    algorithms = all_but_long_rings(valid, args.ranks_per_node or n) if args.algorithms == "all" \
        else args.algorithms.split(",")
    left_out = [a for a in valid if a not in algorithms] if args.algorithms == "all" else []
    unknown = [a for a in algorithms if a not in valid]
    if unknown:
        raise SystemExit(f"unknown {args.collective} algorithm(s) {unknown}: valid here are {valid}")
    return n, parse_sizes(args.sizes), network, algorithms, left_out


def all_but_long_rings(valid, ranks_per_node):
    """What "all" runs: every valid algorithm but shm_ring above RING_NODE_LIMIT ranks per
    node, whose n sync points a call, each one a wait for every rank of the node, take the
    simulator minutes at a thousand ranks (`-a shm_ring` still runs it)."""
    return [a for a in valid if a != "shm_ring" or ranks_per_node <= RING_NODE_LIMIT]


def simulate_all(spec, algorithms, network, sizes, count, args):
    """Run every algorithm: (rows with time, formula, algbw, busbw, messages and wrong elements,
    the recorded events one algorithm after another on one time line, wall seconds per algorithm)."""
    n = args.ranks
    rows, events, walls = [], [], {}
    for algorithm in algorithms:
        begin = time.perf_counter()
        times, wrong, messages, recorded = run_one(spec, algorithm, n, network, sizes, count, args.root,
                                                   record=bool(args.trace))
        walls[algorithm] = time.perf_counter() - begin
        offset = max((e["end"] for e in events), default=0.0)
        events += [dict(e, start=e["start"] + offset, end=e["end"] + offset, name=f"{algorithm}: {e['name']}")
                   for e in recorded]
        for i, size in enumerate(sizes):
            algbw = size / times[i] / 1e9 if times[i] > 0 else 0.0
            rows.append({"size": size, "algorithm": algorithm, "time": times[i],
                         "formula": formula(args.collective, algorithm, size, n, network),
                         "messages": messages[min(i, len(messages) - 1)], "wrong": wrong,
                         "algbw": algbw, "busbw": algbw * spec.bus_factor(n)})
    return rows, events, walls


def format_row(row):
    """One line of the table: simulated time next to the formula's, bandwidths, messages."""
    predicted = row["formula"]
    formula_text = "-" if predicted is None else f"{predicted * 1e6:.1f}"
    ratio = "-" if not predicted else f"{row['time'] / predicted:.3f}"
    return (f"  {human(row['size']):>10}  {row['algorithm']:<19} {row['time'] * 1e6:>12.1f} "
            f"{formula_text:>13} {ratio:>11} {row['algbw']:>12.3f} {row['busbw']:>12.3f} "
            f"{row['messages']:>9} {row['wrong']:>6}")


if __name__ == "__main__":
    sys.exit(main())
