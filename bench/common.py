"""What every benchmark shares: sizes, inputs, result checking, the rank-0 printer and the
start of a benchmark's main (parse the flags, join the communicator).

A leaf module: it imports nothing else from bench/, so any benchmark can use it without an
import cycle. Collective-specific code lives in the benchmark files; the nccl-tests sweep
lives in bench/harness.py.
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import numpy as np

from kernels.arrays import to_numpy

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


# -- sizes --------------------------------------------------------------------------------------
def parse_size(text: str | int) -> int:
    """'8', '64K', '16M', '1G' -> bytes."""
    text = str(text).strip().upper().rstrip("B")
    unit = text[-1] if text and text[-1] in UNITS else ""
    try:
        return int(float(text[:len(text) - len(unit)]) * UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 8, 64K, 16M)") from None


def parse_sizes(text: str) -> list[int]:
    """'1K,1M,256M' -> [1024, 1048576, 268435456]."""
    return [parse_size(s) for s in text.split(",")]


def size_sweep(minbytes: int, maxbytes: int, stepfactor: int, smallest: int = 1) -> list[int]:
    """nccl-tests' -b/-e/-f sweep: minbytes (at least `smallest`), times stepfactor, up to maxbytes."""
    if stepfactor < 2:
        raise SystemExit("-f must be at least 2")
    size, out = max(minbytes, smallest), []
    while size <= maxbytes:
        out.append(size)
        size *= stepfactor
    return out


def human(size: float) -> str:
    """1 KiB, 256 MiB; 3 significant digits where the size is not a whole unit (830 KiB)."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size // scale} {unit}iB" if size % scale == 0 else f"{size / scale:.3g} {unit}iB"
    return f"{size:.0f} B"


def algorithm_names(collective: str, n: int, ranks_per_node: int | None = None,
                    shared_memory: bool = False) -> list[str]:
    """The registry's algorithms for `collective` on an n-rank world ("mpi" excluded);
    shared_memory: each node's ranks (all n, or each ranks_per_node) share a segment, as
    on the simulator's network, so the shared-memory algorithms of one node join in."""
    import types

    from collectives import algorithms as registry
    from collectives.transport.contract import Capabilities
    segment = None
    if shared_memory:       # what algorithms.shm.segment_of looks at
        segment = types.SimpleNamespace(size=ranks_per_node or n, closed=False, staging_bytes=1 << 20)
    world = types.SimpleNamespace(size=n, capabilities=Capabilities(ranks_per_node=ranks_per_node,
                                                                    shared_segment=segment))
    return registry.names(collective, world)


# -- inputs and checking ------------------------------------------------------------------------
def fill(rank: int, count: int, dtype: Any, op: str) -> np.ndarray:
    """Rank `rank`'s input: small integers, so sums and products are exact in every dtype."""
    i = np.arange(count)
    if op == "prod":
        values = 1 + (i + rank) % 2
    else:
        values = (i * 7 + rank * 3) % 11 - 5
    if np.dtype(dtype).kind == "u":
        values = values + 5
    return values.astype(dtype)


def count_wrong(got: Any, expected: Any) -> int:
    """Elements of `got` off the float64 `expected` by more than a rounding of the dtype."""
    if expected is None:
        return 0
    got = to_numpy(got)
    got64 = np.asarray(got, dtype=np.float64).reshape(-1)
    expected = np.asarray(expected, dtype=np.float64).reshape(-1)
    if got64.shape != expected.shape:
        return max(got64.size, expected.size)
    eps = np.finfo(got.dtype).eps if got.dtype.kind == "f" else 0.0
    return int(np.count_nonzero(np.abs(got64 - expected) > 2 * eps * np.abs(expected)))


def reduce_float64(inputs: list[np.ndarray], op: str) -> np.ndarray:
    """The float64 reduction of the ranks' inputs under `op` (the benchmarks' expectation)."""
    stack = np.stack([x.astype(np.float64) for x in inputs])
    reduced = {"sum": stack.sum, "avg": stack.sum, "prod": stack.prod,
               "max": stack.max, "min": stack.min}[op](axis=0)
    return reduced / len(inputs) if op == "avg" else reduced


# -- printing and the start of main -------------------------------------------------------------
def rank0_printer(rank: int, out: TextIO = sys.stdout) -> Callable[..., None]:
    """print(...) to `out` (flushed) on rank 0; a no-op on every other rank."""
    if rank != 0:
        return lambda *args, **kwargs: None
    return lambda *args, **kwargs: print(*args, **kwargs, file=out, flush=True)


def start(parser: argparse.ArgumentParser, argv: list[str] | None = None, out: TextIO = sys.stdout,
          init_options: Callable[[argparse.Namespace], dict] = lambda args: {}):
    """A distributed benchmark's preamble: parse `argv`, join the communicator
    (cc.init(**init_options(args))) and make the rank-0 printer to `out`. Returns
    (args, comm, say)."""
    import collectives as cc
    args = parser.parse_args(argv)
    comm = cc.init(**init_options(args))
    return args, comm, rank0_printer(comm.rank, out)


def placement(comm: Any) -> str:
    """One line on where the ranks run: how many hosts, ranks and cores the job has, and,
    where a host runs more ranks than the cores it lets the job use, a warning: the ranks
    then take turns on the cores, so every wait for a peer includes the scheduler's, and
    only times measured side by side in one run compare. Collective (one allgather)."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    hosts: dict[str, tuple[int, set]] = {}
    for host, allowed in comm.allgather_object((socket.gethostname(), sorted(cores))):
        ranks, usable = hosts.get(host, (0, set()))
        hosts[host] = (ranks + 1, usable | set(allowed))
    ranks_per_core = max(ranks / len(usable) for ranks, usable in hosts.values())
    if len(hosts) == 1:
        (ranks, usable), = hosts.values()
        line = f"# placement: {ranks} ranks on 1 host ({_cores(usable)})"
    else:
        per_host = ", ".join(f"{ranks} on {_cores(usable)}" for ranks, usable in hosts.values())
        line = f"# placement: {comm.size} ranks on {len(hosts)} hosts ({per_host})"
    if ranks_per_core > 1:
        line += (f": {ranks_per_core:g} ranks per core, so ranks take turns on the cores and every "
                 "wait for a peer includes the scheduler's; compare times within one run only")
    return line


def _cores(usable: set) -> str:
    return f"{len(usable)} core" + ("s" if len(usable) != 1 else "")


# -- timing training steps ------------------------------------------------------------------------
def round_order(contenders: list, index: int) -> list:
    """The contenders of timed round `index`: as listed in round 0, then shuffled with the
    round's number as the seed (the same order on every rank, which must call them alike),
    so that no contender always follows the same one: each pays for the state its
    predecessor leaves (caches full of dirty lines, a queue to drain), and in a fixed order
    that would be the same bias in every round."""
    order = list(contenders)
    if index:
        random.Random(index).shuffle(order)
    return order


def interleaved(comm: Any, steps: dict[str, Callable[[], Any]], rounds: int, repeats: int, warmup: bool = True,
                after_round: Callable[[int], None] = lambda index: None) -> dict[str, list[tuple[float, Any]]]:
    """Time each step function `repeats` times per round, the contenders taking turns round by
    round in an order that changes from round to round (`round_order`; so machine noise and
    each other's leftovers hit all alike), after one untimed warm-up call of each unless
    `warmup` is False. Returns {name: [(seconds, what the step returned)]} for this rank; a
    barrier starts each turn."""
    if warmup:
        for step in steps.values():          # buffers, workspaces, first touch
            step()
    samples = {name: [] for name in steps}
    for index in range(rounds):
        for name in round_order(steps, index):
            step = steps[name]
            comm.barrier()
            for _ in range(repeats):
                begin = time.perf_counter()
                result = step()
                samples[name].append((time.perf_counter() - begin, result))
        after_round(index)
    return samples


def slowest_median(per_rank: Iterable[list[float]]) -> float:
    """The median over steps of the slowest rank's time: per_rank[rank][step] -> seconds."""
    per_rank = list(per_rank)
    return statistics.median(max(times[i] for times in per_rank) for i in range(len(per_rank[0])))
