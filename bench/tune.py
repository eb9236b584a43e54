"""mpirun -n 4 python -m bench.tune [-b 8 -e 8M -f 4] [-n 10] [-w 3]
       [--collectives allreduce,reduce_scatter,allgather] [--output FILE] [--plot FILE]

Measures every algorithm of ours over a size sweep on this machine (the nccl-tests timing
of bench.harness), fits alpha (seconds per message), beta (per byte moved) and gamma (per
byte reduced) by least squares to the textbook formulas of collectives.tuning (Thakur,
Rabenseifner and Gropp 2005; Patarasuk and Yuan 2009 for the ring), which are linear in
them; where the ranks share a segment, it also fits the shared-memory costs to the
timings of oneshot, twoshot and the "shm" algorithms: shm_alpha (seconds per sync point)
and shm_beta (per byte passed through the segment), in the same least-squares solve,
gamma common to both kinds (collectives.tuning.fit). It prints for every algorithm and
size the predicted time next to the measured one, the predicted crossover sizes between
algorithms, and how often the model's pick is within 10% of the measured best. It writes
the tuning file that algorithm="auto" reads (default $COLLECTIVES_TUNING, else
~/.cache/collectives/tuning.json): the fitted model, plus the measured times, which
"auto" follows at this world size.
"""
import argparse
import math
import socket
import sys
import time
from itertools import combinations

import numpy as np

from bench.common import human, parse_size, placement, size_sweep, start
from bench.harness import Runner, make_input, time_rounds
from bench.simulate import collective_spec
from collectives import tuning

WITHIN = 0.10     # "auto" should pick an algorithm within 10% of the measured best


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench.tune", description=__doc__.split("\n\n")[1])
    parser.add_argument("-b", "--minbytes", type=parse_size, default=parse_size("8"))
    parser.add_argument("-e", "--maxbytes", type=parse_size, default=parse_size("8M"))
    parser.add_argument("-f", "--stepfactor", type=int, default=4)
    parser.add_argument("-n", "--iters", type=int, default=10)
    parser.add_argument("-w", "--warmup_iters", type=int, default=3)
    parser.add_argument("--collectives", default="allreduce,reduce_scatter,allgather",
                        help="collectives to measure and fit (allreduce, reduce_scatter, allgather, "
                             "broadcast, reduce, alltoall, gather, scatter)")
    parser.add_argument("--output", default=None, help="tuning file (default: $COLLECTIVES_TUNING "
                                                        "or ~/.cache/collectives/tuning.json)")
    parser.add_argument("--plot", metavar="FILE", help="draw predicted against measured")
    return parser


def measure(comm, names, sizes, args, progress=lambda text: None):
    """{collective: {"world_size", "sizes", "times": {algorithm: [seconds]}, "chunks":
    {algorithm: [k]}}} (out of place where there is that mode; float32, sum). Sizes are the
    outer loop, so that a change in machine load shows in every collective alike."""
    options = argparse.Namespace(op="sum", root=0, datatype="float32", device="cpu",
                                 iters=args.iters, warmup_iters=args.warmup_iters)
    model = tuning.current().model        # what the algorithms plan their chunks with now
    specs = {name: collective_spec(name) for name in names}
    ours = {name: [a for a in comm.algorithms(name) if a != "mpi"] for name in names}
    tables = {name: {"world_size": comm.size, "sizes": list(sizes), "times": {a: [] for a in ours[name]},
                     "chunks": {a: [] for a in ours[name]}} for name in names}
    for size in sizes:
        for name, spec in specs.items():
            inplace = spec.modes[0]
            count = spec.count_for(size, comm.size, 4)
            calls = {inplace: spec.arguments(make_input(comm.rank, count, options), comm.size, comm.rank,
                                             inplace)}
            times = time_rounds(comm, Runner(comm, spec, options, {}), ours[name], calls, options)
            for algorithm in ours[name]:
                tables[name]["times"][algorithm].append(times[(algorithm, inplace)])
                tables[name]["chunks"][algorithm].append(
                    tuning.algorithm_chunks(name, algorithm, count * 4, comm.size, model))
        progress(f"# measured {human(size)}")
    return tables


def fit_tables(measured, n):
    """The CostModel fitted to every measured (collective, algorithm, size): alpha, beta
    and gamma to the message algorithms, then shm_alpha and shm_beta to the shared-memory
    ones (tuning.SHARED_MEMORY; the defaults stay where none was measured), around the cache
    prices of the model in use (a tuning file's are kept, DEFAULT's otherwise)."""
    cache = tuning.current().model
    plain, shared, cached = ([], []), ([], []), []
    for name, table in measured.items():
        for algorithm, column in table["times"].items():
            is_shared = (name, algorithm) in tuning.SHARED_MEMORY
            rows, times = shared if is_shared else plain
            for size, seconds, k in zip(table["sizes"], column, table["chunks"][algorithm]):
                rows.append(tuning.coefficients(name, algorithm, size, n, chunks=k))
                times.append(seconds)
                if is_shared:
                    cached.append(cache.in_cache(tuning.segment_bytes(name, size, n)))
    return tuning.fit(*plain, shared_rows=shared[0], shared_times=shared[1], shared_cached=cached, cache=cache)


def describe_shared(model, measured):
    """One line on the shared-memory costs: fitted, or why they were not."""
    fitted = any((name, a) in tuning.SHARED_MEMORY for name, table in measured.items() for a in table["times"])
    if not fitted:
        return ("# shared memory: not measured (no segment: ranks on different machines, or "
                f"COLLECTIVES_SHM_BYTES=0); defaults kept: sync {model.shm_alpha * 1e6:.2f} us, "
                f"{model.shm_beta * 1e9:.4f} ns/B")
    def rate(seconds_per_byte):
        return 1 / seconds_per_byte / 1e9 if seconds_per_byte else math.inf
    return (f"# fitted shared memory: shm_alpha {model.shm_alpha * 1e6:.2f} us per sync point, "
            f"shm_beta {model.shm_beta * 1e9:.4f} ns/B passed ({rate(model.shm_beta):.2f} GB/s); calls whose "
            f"segment bytes fit {human(model.cache_bytes)} at the cache rates, not fitted: "
            f"{rate(model.cache_beta):.1f} GB/s passed, {rate(model.cache_gamma):.1f} GB/s reduced")


def crossovers(name, algorithms, n, model, low=1, high=1 << 30):
    """Predicted sizes where two algorithms swap places: [(size, faster below, faster above)]."""
    grid = np.geomspace(low, high, 400)
    found = []
    for a, b in combinations(algorithms, 2):
        def gap(size):
            return (tuning.predict(name, a, size, n, model) - tuning.predict(name, b, size, n, model))
        values = [gap(s) for s in grid]
        for i in range(len(grid) - 1):
            if values[i] == 0 or values[i] * values[i + 1] >= 0:
                continue
            lo, hi = grid[i], grid[i + 1]
            for _ in range(40):
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if gap(mid) * values[i] > 0 else (lo, mid)
            below, above = (b, a) if values[i] > 0 else (a, b)
            found.append((hi, below, above))
    return sorted(found)


def winners(name, algorithms, n, model, low=1, high=1 << 30):
    """The model's fastest algorithm along the sizes: [(from size, algorithm)]."""
    out = []
    for size in np.geomspace(low, high, 600):
        best = tuning.choose(name, algorithms, size, n, model)
        if not out or out[-1][1] != best:
            out.append((size, best))
    return out


def report(measured, model, n, say):
    """Print predicted against measured, crossovers and the 10% criterion; returns
    (sizes where the model's pick is within 10% of the best, sizes measured)."""
    good = total = 0
    for name, table in measured.items():
        algorithms = list(table["times"])
        say(f"#\n# {name}: measured vs predicted (us; fitted model, textbook formulas)")
        say(f"# {'size':>10}  " + "".join(f"{a[:21]:>22}" for a in algorithms)
            + f"  {'best measured':>19} {'model picks':>19} {'its time/best':>13}")
        for i, size in enumerate(table["sizes"]):
            cells = ""
            for a in algorithms:
                t = table["times"][a][i]
                p = tuning.predict(name, a, size, n, model, chunks=table["chunks"][a][i])
                cells += f"{t * 1e6:>9.0f}/{p * 1e6:<7.0f}{p / t:>5.2f}"
            best = min(algorithms, key=lambda a: table["times"][a][i])
            pick = tuning.choose(name, algorithms, size, n, model)
            ratio = table["times"][pick][i] / table["times"][best][i]
            good += ratio <= 1 + WITHIN
            total += 1
            say(f"  {human(size):>10}  {cells}  {best:>19} {pick:>19} {ratio:>13.2f}")
        say("# (each cell: measured/predicted us, then predicted/measured)")
        switch = winners(name, algorithms, n, model)
        say(f"# {name}, predicted fastest: " + "; ".join(
            f"{a} from {human(s)}" if i else f"{a}" for i, (s, a) in enumerate(switch)))
        for size, below, above in crossovers(name, algorithms, n, model):
            say(f"#   predicted crossover {below} -> {above} at {human(size)}")
    return good, total


def main(argv=None, out=sys.stdout):
    args, comm, say = start(build_parser(), argv, out, lambda args: {"timeout": 0})
    sizes = size_sweep(args.minbytes, args.maxbytes, args.stepfactor, smallest=4)
    names = args.collectives.split(",")
    say(f"# bench.tune: {comm.size} ranks on {socket.gethostname()}, float32 sum, sizes "
        f"{human(sizes[0])}..{human(sizes[-1])} x{args.stepfactor}, iters {args.iters}")
    say(placement(comm))
    np.seterr(over="ignore", invalid="ignore", under="ignore")
    began = time.perf_counter()
    progress = ((lambda text: print(f"{text} ({time.perf_counter() - began:.0f} s)", file=sys.stderr,
                                    flush=True)) if comm.rank == 0 else (lambda text: None))
    measured = measure(comm, names, sizes, args, progress)
    if comm.rank != 0:
        return 0
    model = fit_tables(measured, comm.size)
    say(f"# fitted: alpha {model.alpha * 1e6:.2f} us, beta {model.beta * 1e9:.4f} ns/B "
        f"({1 / model.beta / 1e9 if model.beta else math.inf:.2f} GB/s), gamma {model.gamma * 1e9:.4f} ns/B "
        f"({1 / model.gamma / 1e9 if model.gamma else math.inf:.2f} GB/s)")
    say(describe_shared(model, measured))
    good, total = report(measured, model, comm.size, say)
    say("#")
    say(f"# model's pick within {WITHIN:.0%} of the measured best at {good} of {total} measured sizes; "
        f"with the tuning file, auto follows the measured table at {comm.size} ranks (all {total})")
    path = tuning.save(args.output or tuning.default_path(), model, measured, host=socket.gethostname(),
                       created=time.strftime("%Y-%m-%d %H:%M:%S"), world_size=comm.size)
    say(f"# tuning file: {path} (algorithm='auto' reads it; COLLECTIVES_TUNING overrides the path)")
    if args.plot:
        from bench.plot import predicted_vs_measured
        predicted_vs_measured(measured, lambda c, a, s: tuning.predict(c, a, s, comm.size, model), args.plot,
                              f"bench.tune on {socket.gethostname()}, {comm.size} ranks: alpha "
                              f"{model.alpha * 1e6:.1f} us, beta {model.beta * 1e9:.3f} ns/B, "
                              f"gamma {model.gamma * 1e9:.3f} ns/B")
        say(f"# plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
