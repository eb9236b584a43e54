"""The benchmark harness in the manner of nccl-tests: size sweep, interleaved timing,
result checking, the table, the footer and JSON. A benchmark file only describes its
collective (a `Collective`) and calls `main`.

Timing: at each size every algorithm runs `iters` timed iterations (after `warmup`), split
into rounds that alternate between algorithms, in an order that changes from round to
round (bench.common.round_order), so machine noise and each other's leftovers hit all
of them alike.
A round's time runs from the first rank's start after a barrier to the last rank's end
(one host; the slowest rank's own time across hosts), per iteration.
algbw = size / time and busbw = algbw * the collective's bus factor, as nccl-tests
defines them (GB = 1e9 bytes).
"""
import argparse
import gc
import json
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bench import mpi_direct
from bench.common import (
    count_wrong,
    fill,
    parse_size,
    placement,
    rank0_printer,
    reduce_float64,
    round_order,
    size_sweep,
    start,
)

# fill, count_wrong, parse_size and reduce_float64 live in bench.common; the
# benchmark files and tests have always imported them from here too.
__all__ = ["Collective", "Runner", "build_parser", "check", "count_wrong", "fill", "format_footer",
           "format_header", "format_row", "main", "make_input", "parse_size", "reduce_float64", "sizes",
           "round_seconds", "time_rounds", "total_wrong", "trace_calls"]


@dataclass
class Collective:
    """What a benchmark says about its collective.

    name: e.g. "allreduce" (also the Communicator method and algorithm-registry key)
    bus_factor(n): busbw / algbw (all-reduce 2(n-1)/n, reduce-scatter and all-gather
        (n-1)/n, broadcast and reduce 1)
    count_for(size, n, itemsize): elements per rank's input for a `size`-byte row
    run(comm, x, out, op, root, algorithm, inplace): one call of the collective
    expected(inputs, op, root, rank): the float64 result this rank should end with
        (None where the rank's result is unspecified)
    buffers(x, n, rank, inplace): the (x, out) pair a call gets; default: (x, None) in
        place, (x, a new array like x) out of place
    modes: which of out-of-place (False) and in-place (True) the collective has
    rooted: whether the `root` column applies
    baselines(comm, args, say): extra rows beyond the communicator's algorithms, e.g. NCCL on
        GPUs: {name: run(comm, x, out, op, root, inplace)}; may print why there are none
    The checked result is what the call returns.
    """
    name: str
    bus_factor: Callable
    count_for: Callable
    run: Callable
    expected: Callable
    buffers: Callable = None
    modes: tuple = (False, True)
    rooted: bool = False
    baselines: Callable = None

    def arguments(self, x, n, rank, inplace):
        if self.buffers is not None:
            return self.buffers(x, n, rank, inplace)
        return (x, None) if inplace else (x, np.empty_like(x))


def build_parser(collective):
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.{collective.name}",
        description=f"nccl-tests-style {collective.name} benchmark of every algorithm "
                    f"(run under mpirun, e.g. mpirun -n 4 python -m bench.{collective.name})")
    parser.add_argument("-b", "--minbytes", type=parse_size, default=parse_size("8"))
    parser.add_argument("-e", "--maxbytes", type=parse_size, default=parse_size("16M"))
    parser.add_argument("-f", "--stepfactor", type=int, default=2, help="multiply size by this")
    parser.add_argument("-n", "--iters", type=int, default=20, help="timed iterations per size")
    parser.add_argument("-w", "--warmup_iters", type=int, default=5)
    parser.add_argument("-d", "--datatype", default="float32",
                        help="float16, float32, float64, int8, int16, int32, int64, uint8")
    parser.add_argument("-o", "--op", default="sum", help="sum, prod, max, min, avg")
    parser.add_argument("-r", "--root", type=int, default=0, help="root rank (broadcast, reduce)")
    parser.add_argument("-c", "--check", type=int, default=1, help="check results (1) or not (0)")
    parser.add_argument("-a", "--algorithms", default="all",
                        help="comma-separated algorithm names, or 'all' (ours and mpi)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="NumPy buffers (cpu) or CuPy buffers on this rank's GPU (gpu)")
    parser.add_argument("--timeout", type=float, default=0,
                        help="collective timeout in seconds (default 0: none, so that algorithm "
                             "'mpi' is MPI's plain blocking call)")
    parser.add_argument("--trace", metavar="FILE",
                        help="after the sweep, run every algorithm once per size with tracing on and "
                             "write all ranks' steps as a Chrome trace (open in ui.perfetto.dev)")
    parser.add_argument("--plot", metavar="FILE", help="draw busbw against size for every algorithm, and "
                        "below each one's speed against MPI's (PNG)")
    parser.add_argument("--registered", action="store_true",
                        help="inputs from comm.empty (in the shared segment where there is one: "
                             "the shared-memory algorithms read them in place)")
    return parser


def sizes(args, itemsize):
    """The -b/-e/-f sweep in bytes, starting at one element at least."""
    return size_sweep(args.minbytes, args.maxbytes, args.stepfactor, itemsize)


# The pseudo-algorithm timed beside the others: every rank copies its input once, all at
# the same time (the memory system's floor for anything that must touch every byte).
FLOOR = "floor"


class Runner:
    """Calls one algorithm of the collective (or a baseline row such as NCCL, or the FLOOR
    copy), and waits for the device to finish where buffers live on a GPU."""

    def __init__(self, comm, collective, args, baselines):
        self.comm, self.collective, self.args, self.baselines = comm, collective, args, baselines
        self._scratch = {}
        self.synchronize = lambda: None
        if args.device == "gpu":
            import cupy
            self.synchronize = cupy.cuda.get_current_stream().synchronize

    def __call__(self, algorithm, x, out, inplace):
        args = self.args
        if algorithm == FLOOR:
            return self.copy(x)
        if algorithm in self.baselines:
            return self.baselines[algorithm](self.comm, x, out, args.op, args.root, inplace)
        return self.collective.run(self.comm, x, out, args.op, args.root, algorithm, inplace)


    def copy(self, x):
        """x copied into a scratch buffer kept per shape and dtype."""
        key = (x.shape, x.dtype, type(x))
        scratch = self._scratch.get(key)
        if scratch is None:
            self._scratch.clear()                 # one size at a time: keep one buffer
            scratch = self._scratch[key] = x.copy()
        scratch[...] = x
        return scratch


def time_rounds(comm, run, algorithms, calls, args):
    """Interleaved timing: returns {(algorithm, inplace): seconds per iteration}.

    A round of `iters` calls starts after a barrier. Its time is the span from the first
    rank's start to the last rank's end when the ranks share one clock (one host), else
    the slowest rank's own time. The span is what a job waits for; a rank's own time
    leaves out the time it waited for a core after the barrier, which with more ranks
    than cores made the floor (ranks copying independently) read anywhere between one
    and two copies' worth of time depending on when each rank happened to be scheduled.
    Python's garbage collector is off while the rounds run (garbage_collection_paused).
    """
    with garbage_collection_paused():
        stamps = _timed_rounds(comm, run, algorithms, calls, args)
    ranks = comm.allgather_object((socket.gethostname(), stamps))
    one_clock = len({host for host, _ in ranks}) == 1
    return {key: round_seconds([rank_stamps[key] for _, rank_stamps in ranks], one_clock) / max(args.iters, 1)
            for key in stamps}


@contextmanager
def garbage_collection_paused():
    """Collect now, then keep Python's cyclic garbage collector off inside the block (as
    timeit does): a collection would land in whichever contender's turn is running and
    charge it milliseconds that are not its own."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _timed_rounds(comm, run, algorithms, calls, args):
    """This rank's (start, end) of every timed round, per (algorithm, inplace)."""
    keys = [(a, inplace) for a in algorithms for inplace in calls]
    rounds = max(1, min(args.iters, 4))
    per_round = [args.iters // rounds + (1 if i < args.iters % rounds else 0) for i in range(rounds)]
    for (algorithm, inplace) in keys:
        for _ in range(args.warmup_iters):
            run(algorithm, *calls[inplace], inplace)
    stamps = {key: [] for key in keys}
    for index, iters in enumerate(per_round):
        for (algorithm, inplace) in round_order(keys, index):
            run.synchronize()
            comm.barrier()
            start = time.perf_counter()
            for _ in range(iters):
                run(algorithm, *calls[inplace], inplace)
            run.synchronize()
            stamps[(algorithm, inplace)].append((start, time.perf_counter()))
    return stamps


def round_seconds(per_rank, one_clock):
    """Total time of the timed rounds from every rank's [(start, end), ...] per round:
    summed spans (first start to last end) on one clock, else the slowest rank's sum."""
    if one_clock:
        return sum(max(end for _, end in laps) - min(start for start, _ in laps) for laps in zip(*per_rank))
    return max(sum(end - start for start, end in laps) for laps in per_rank)


def make_input(rank, count, args, comm=None):
    """This rank's benchmark input, on the device the run uses (with --registered, in an
    array from comm.empty)."""
    x = fill(rank, count, args.datatype, args.op)
    if args.device == "gpu":
        import cupy
        return cupy.asarray(x)
    if getattr(args, "registered", False) and comm is not None:
        registered = comm.empty(x.shape, x.dtype)
        registered[...] = x
        return registered
    return x


def check(comm, run, collective, algorithm, count, args, inplace):
    """Run once on fresh inputs and count wrong elements on this rank (summed over ranks)."""
    inputs = [fill(r, count, args.datatype, args.op) for r in range(comm.size)]
    x, out = collective.arguments(make_input(comm.rank, count, args, comm), comm.size, comm.rank, inplace)
    got = run(algorithm, x, out, inplace)
    run.synchronize()
    expected = collective.expected(inputs, args.op, args.root, comm.rank)
    wrong = count_wrong(got, expected)
    return sum(comm.allgather_object(wrong))


HEADER = ("#\n# {title:>66}{inplace:>31}\n"
          "# {:>10} {:>12} {:>8} {:>6} {:>6}   {:>9} {:>7} {:>7} {:>6}   {:>9} {:>7} {:>7} {:>6}\n"
          "# {:>10} {:>12} {:>8} {:>6} {:>6}   {:>9} {:>7} {:>7} {:>6}   {:>9} {:>7} {:>7} {:>6}")


def format_header():
    return HEADER.format("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong",
                         "time", "algbw", "busbw", "#wrong",
                         "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "",
                         "(us)", "(GB/s)", "(GB/s)", "", title="out-of-place", inplace="in-place")


def format_row(row):
    def part(prefix):
        if row.get(prefix + "time_us") is None:
            return f"{'N/A':>9} {'N/A':>7} {'N/A':>7} {'N/A':>6}"
        return (f"{row[prefix + 'time_us']:>9.1f} {row[prefix + 'algbw']:>7.3f} "
                f"{row[prefix + 'busbw']:>7.3f} {row[prefix + 'wrong']:>6}")
    return (f"  {row['size']:>10} {row['count']:>12} {row['dtype']:>8} {row['op']:>6} "
            f"{row['root']:>6}   {part('')}   {part('inplace_')}")


def main(collective, argv=None, out=sys.stdout):
    """Run the sweep for `collective` on cc.init() and print the nccl-tests table; returns
    the exit status (1 if any result was wrong)."""
    args, comm, say = start(build_parser(collective), argv, out, lambda args: {"timeout": args.timeout})
    dtype = np.dtype(args.datatype)
    if args.device == "gpu":
        require_gpu()
    baselines = collective.baselines(comm, args, say) if collective.baselines else {}
    algorithms = select_algorithms(comm, collective, args, baselines)
    say(f"# collectives bench.{collective.name}: {comm.size} ranks, dtype {dtype}, op {args.op}, "
        f"iters {args.iters}, warmup {args.warmup_iters}, check {args.check}, device {args.device}")
    say(placement(comm))
    run = Runner(comm, collective, args, baselines)
    say(f"# algorithms: {', '.join(algorithms)}")
    size_list = sizes(args, dtype.itemsize)
    rows = sweep(comm, run, collective, algorithms, size_list, args)
    for algorithm in algorithms:
        say(f"#\n# algorithm: {algorithm}")
        say(format_header())
        for row in rows:
            if row["algorithm"] == algorithm:
                say(format_row(row))
    say(format_footer(rows, algorithms, baselines))
    write_extras(comm, run, collective, algorithms, size_list, rows, args, say)
    return 1 if total_wrong(rows) else 0


def require_gpu():
    """Exit with the reason when --device gpu cannot run here."""
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise SystemExit(f"--device gpu needs CuPy and a CUDA device: {error}") from None


def select_algorithms(comm, collective, args, baselines):
    """The -a list (or every algorithm and baseline row); exits naming any unknown one."""
    valid = comm.algorithms(collective.name, device=args.device == "gpu") + list(baselines)
    algorithms = valid if args.algorithms == "all" else args.algorithms.split(",")
    unknown = [a for a in algorithms if a not in valid]
    host_only = [a for a in unknown if a in comm.algorithms(collective.name)]
    if host_only:
        raise SystemExit(f"{collective.name} algorithm(s) {host_only} need host buffers (they read "
                         f"peers' inputs in the shared segment); with --device gpu valid are {valid}")
    if unknown:
        raise SystemExit(f"unknown {collective.name} algorithm(s) {unknown}: valid are {valid}")
    return algorithms


def sweep(comm, run, collective, algorithms, size_list, args):
    """Time (and check) every algorithm at every size: the table's rows, size by size."""
    progress = rank0_printer(comm.rank, sys.stderr)
    itemsize = np.dtype(args.datatype).itemsize
    rows = []
    np.seterr(over="ignore", invalid="ignore", under="ignore")   # in-place reruns grow values
    for index, size in enumerate(size_list, 1):
        count = collective.count_for(size, comm.size, itemsize)
        calls = {inplace: collective.arguments(make_input(comm.rank, count, args, comm),
                                                comm.size, comm.rank, inplace)
                 for inplace in collective.modes}
        times = time_rounds(comm, run, algorithms + [FLOOR], calls, args)
        for algorithm in algorithms:
            row = result_row(comm, run, collective, algorithm, size, count, times, args)
            row["floor_us"] = times[(FLOOR, collective.modes[0])] * 1e6
            rows.append(row)
        progress(f"# [{index}/{len(size_list)}] {size} B done")
    return rows


def result_row(comm, run, collective, algorithm, size, count, times, args):
    """One table row: time, algbw, busbw and wrong elements, out of place and in place
    (None where the collective has no such mode)."""
    row = {"size": size, "count": count, "dtype": str(np.dtype(args.datatype)), "op": args.op,
           "root": args.root if collective.rooted else -1, "algorithm": algorithm}
    for inplace in (False, True):
        prefix = "inplace_" if inplace else ""
        if inplace not in collective.modes:
            row.update({prefix + key: None for key in ("time_us", "algbw", "busbw", "wrong")})
            continue
        seconds = times[(algorithm, inplace)]
        algbw = size / seconds / 1e9 if seconds > 0 else 0.0
        row[prefix + "time_us"] = seconds * 1e6
        row[prefix + "algbw"] = algbw
        row[prefix + "busbw"] = algbw * collective.bus_factor(comm.size)
        row[prefix + "wrong"] = (check(comm, run, collective, algorithm, count, args, inplace)
                                 if args.check else 0)
    return row


def write_extras(comm, run, collective, algorithms, size_list, rows, args, say):
    """The optional outputs after the table: --json rows, --plot picture, --trace file."""
    dtype = np.dtype(args.datatype)
    if args.json and comm.rank == 0:
        with open(args.json, "w") as handle:
            json.dump({"world_size": comm.size, "collective": collective.name,
                       "device": args.device, "results": rows}, handle, indent=1)
    if args.plot and comm.rank == 0:
        from bench.plot import busbw
        busbw(rows, args.plot, f"{collective.name}, {comm.size} ranks, {dtype}, {args.op} ({args.device})")
        say(f"# plot: {args.plot}")
    if args.trace:
        from collectives import trace
        events = trace_calls(comm, run, collective, algorithms, size_list, args)
        if comm.rank == 0:
            trace.write_chrome(args.trace, events, {"collective": collective.name, "world_size": comm.size,
                                                    "dtype": str(dtype), "op": args.op, "sizes": size_list})
            say(f"# trace: {args.trace} ({len(events)} events; open in ui.perfetto.dev or chrome://tracing)")


def trace_calls(comm, run, collective, algorithms, size_list, args):
    """Run every algorithm once per size (first mode: out of place where there is one)
    with tracing on, each call a parent span; returns all ranks' events on rank 0."""
    from collectives import trace
    itemsize = np.dtype(args.datatype).itemsize
    inplace = collective.modes[0]
    with trace.tracing(comm) as recorder:
        for size in size_list:
            count = collective.count_for(size, comm.size, itemsize)
            x, out = collective.arguments(make_input(comm.rank, count, args), comm.size, comm.rank, inplace)
            for algorithm in algorithms:
                comm.barrier()
                with recorder.span(f"{collective.name} {algorithm} {size} B", x=x, out=out):
                    run(algorithm, x, out, inplace)
                    run.synchronize()
    return trace.gather(comm, recorder)


def total_wrong(rows):
    return sum(row[key] or 0 for row in rows for key in ("wrong", "inplace_wrong"))


def format_footer(rows, algorithms, baselines=()):
    """nccl-tests' footer per algorithm, its ratio to "mpi", and the best of ours (not
    "mpi", not a baseline row) per size beside MPI: straight from mpi4py where that row
    was measured (bench.mpi_direct), and through our communicator ("mpi")."""
    lines = ["#"]
    wrong = total_wrong(rows)
    lines.append(f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}")
    mode = "" if rows and rows[0]["busbw"] is not None else "inplace_"
    average = {a: np.mean([r[mode + "busbw"] for r in rows if r["algorithm"] == a]) for a in algorithms}
    for algorithm in algorithms:
        ratio = (f"   ({average[algorithm] / average['mpi']:.2f}x mpi)"
                 if "mpi" in average and average["mpi"] > 0 else "")
        lines.append(f"# Avg bus bandwidth    : {average[algorithm]:.4f}  {algorithm}{ratio}")
    ours = [a for a in algorithms if a != "mpi" and a not in baselines]
    references = [a for a in (mpi_direct.ROW, "mpi") if a in algorithms]
    if ours and references:
        lines += best_of_ours_lines(rows, ours, references, mode)
    return "\n".join(lines + floor_lines(rows, algorithms, mode))


def best_of_ours_lines(rows, ours, references, mode):
    """Per size: the fastest of `ours`, its time, and each reference row's time with the
    ratio reference time / ours (above 1: ours is faster)."""
    label = "in-place" if mode else "out-of-place"
    lines = [f"#\n# best of ours vs mpi, {label}, per size (same run; busbw ratio = MPI's time / ours)"]
    if mpi_direct.ROW in references:
        lines.append(f"#   ({mpi_direct.ROW}: MPI's call straight from mpi4py; mpi: the same call through "
                     f"our communicator, whose per-call path it pays too)")
    by_size = {}
    for row in rows:
        by_size.setdefault(row["size"], {})[row["algorithm"]] = row
    for size, entries in by_size.items():
        best = min(ours, key=lambda a: entries[a][mode + "time_us"])
        best_time = entries[best][mode + "time_us"]
        against = "  ".join(f"{name} {entries[name][mode + 'time_us']:>9.1f} us  busbw ratio "
                            f"{entries[name][mode + 'time_us'] / best_time:.2f}" for name in references)
        lines.append(f"#   {size:>10} B  {best:>18}  {best_time:>9.1f} us  {against}")
    return lines


def floor_lines(rows, algorithms, mode):
    """Per size: the floor (every rank copying its buffer once, all at the same time, timed
    in the same rounds) and each algorithm's time as a multiple of it."""
    floors = {row["size"]: row.get("floor_us") for row in rows}
    if not floors or None in floors.values():
        return []
    names = " ".join(f"{a[:11]:>11}" for a in algorithms)
    lines = ["#", "# time as a multiple of the floor (every rank copying its buffer once, at the same "
             "time; same run):", f"#   {'size (B)':>10} {'floor (us)':>11} {names}"]
    times = {(row["size"], row["algorithm"]): row[mode + "time_us"] for row in rows}
    for size, floor in floors.items():
        multiples = " ".join(f"{times[(size, a)] / floor:>11.1f}" if floor > 0 else f"{'-':>11}"
                             for a in algorithms)
        lines.append(f"#   {size:>10} {floor:>11.1f} {multiples}")
    return lines
