"""python -m bench.explain ALGORITHM [-n 4] [--count 8] [--collective allreduce] [--root 0]
       [--chunks K] [--ranks-per-node G] [--png FILE]

Prints a collective algorithm's schedule step by step: which rank sends which elements to
whom, and which ranks' contributions every rank holds after each step. Nothing here is
drawn by hand: the real algorithm runs (through a Communicator, as in any program) on
the simulated transport with a unit clock (a message takes one step; a rank's port sends
one message and receives one per step; reductions are free), and the schedule is read
back from what it actually sent.

What a rank holds is read from the values themselves. The inputs are int64 and the op is
sum: rank r's element i is i * 2^n + 2^r. A sum over a set S of ranks is then
|S| * i * 2^n + (the bitmask of S), so every value, wherever it sits (the user's buffer or
a scratch buffer), names exactly which contributions it contains and which element it
is. (n <= 32, so that these sums stay exact.)

Examples:  python -m bench.explain ring -n 4 --count 8
           python -m bench.explain rabenseifner -n 6
           python -m bench.explain tree --collective broadcast -n 7 --chunks 3 --png tree.png
"""
import argparse
import sys
from dataclasses import dataclass, field

import numpy as np

from bench.common import algorithm_names
from collectives.simulation import Network, simulate

COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce", "alltoall", "gather",
               "scatter")
# Data movement where every rank starts with its own count/n elements of one global index
# space (rank r's element i of an all-to-all is global element r * count/n + i).
SHARDED_INPUT = ("allgather", "alltoall", "gather")
MAX_RANKS = 32


# -- the encoding -------------------------------------------------------------------------------
def encode(rank, indices, n):
    """Rank `rank`'s values for element `indices`: index * 2^n + 2^rank (int64)."""
    return (np.asarray(indices, dtype=np.int64) << n) | np.int64(1 << rank)


def popcount(masks):
    """How many bits each mask has set: the number of ranks' contributions a value holds."""
    masks = np.asarray(masks, dtype=np.int64)
    return np.array([bin(int(m)).count("1") for m in masks.reshape(-1)], dtype=np.int64).reshape(masks.shape)


def decode(values, n):
    """(element index, contributor bitmask) of each value; index -1 where the value is
    no such sum (e.g. an uninitialised or zero element)."""
    values = np.asarray(values, dtype=np.int64)
    masks = values & ((1 << n) - 1)
    counts = popcount(masks)
    high = values >> n
    valid = (counts > 0) & (high % np.maximum(counts, 1) == 0) & (values >= 0)
    index = np.where(valid, high // np.maximum(counts, 1), -1)
    return index, np.where(valid, masks, 0)


def ranks_text(mask, n):
    """{0-2,5} for a bitmask; 'all' for every rank; '-' for none."""
    mask = int(mask)
    if mask == 0:
        return "-"
    if mask == (1 << n) - 1 and n > 1:
        return "all"
    members = [r for r in range(n) if mask >> r & 1]
    parts, start = [], members[0]
    for a, b in zip(members, members[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}" if a > start + 1 else f"{start},{a}")
            start = b
    return "{" + ",".join(parts) + "}"


def runs(index, masks):
    """Consecutive elements with consecutive indices and the same mask: [(start, stop, mask)]."""
    out = []
    for i, m in zip(index.tolist(), masks.tolist()):
        if i < 0:
            continue
        if out and out[-1][1] == i and out[-1][2] == m:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1, m])
    return [tuple(r) for r in out]


# -- recording -------------------------------------------------------------------------------------
@dataclass
class Message:
    step: int          # the step at whose end it has arrived at dst
    src: int
    dst: int
    nbytes: int
    runs: list         # [(start, stop, mask)] of the elements it carries
    read: bool = False  # dst read it from src's slot of the shared segment (no message)


@dataclass
class Schedule:
    collective: str
    algorithm: str
    n: int
    count: int
    root: int
    messages: list                                  # every message, by step
    holdings: list                                  # per step (0 = start): n x count bitmasks
    events: list = field(default_factory=list)      # the raw trace events (with data)
    results: list = field(default_factory=list)     # every rank's returned array
    ok: bool = False                                # the results are the collective's

    @property
    def steps(self):
        return len(self.holdings) - 1

    def contributions(self, step):
        """n x count: how many ranks' contributions each element of each rank holds after `step`."""
        return popcount(self.holdings[step])


def inputs(collective, n, count, root):
    """(per-rank input arrays, n x count initial bitmasks): what each rank starts with."""
    held = np.zeros((n, count), dtype=np.int64)
    if collective in SHARDED_INPUT:
        per = count // n
        xs = [encode(r, np.arange(r * per, (r + 1) * per), n) for r in range(n)]
        for r in range(n):
            held[r, r * per:(r + 1) * per] = 1 << r
        return xs, held
    if collective in ("broadcast", "scatter"):
        xs = [encode(root, np.arange(count), n) if r == root else np.zeros(count, np.int64) for r in range(n)]
        held[root] = 1 << root
        return xs, held
    xs = [encode(r, np.arange(count), n) for r in range(n)]
    for r in range(n):
        held[r] = 1 << r
    return xs, held


def _call(comm, collective, x, algorithm, root):
    if collective == "allreduce":
        return comm.allreduce(x, "sum", algorithm=algorithm)
    if collective == "reduce_scatter":
        return comm.reduce_scatter(x, "sum", algorithm=algorithm)
    if collective == "allgather":
        return comm.allgather(x, algorithm=algorithm)
    if collective == "broadcast":
        return comm.broadcast(x, root, algorithm=algorithm)
    if collective in ("alltoall", "gather", "scatter"):
        return _call_movement(comm, collective, x, algorithm, root)
    return comm.reduce(x, "sum", root, algorithm=algorithm)


def _call_movement(comm, collective, x, algorithm, root):
    if collective == "alltoall":
        return comm.alltoall(x, algorithm=algorithm)
    if collective == "gather":
        return comm.gather(x, root, algorithm=algorithm)
    return comm.scatter(x, root, algorithm=algorithm)


def _movement_masks(collective, n, count, root, rank):
    """expected_masks of all-to-all, gather and scatter."""
    from collectives import partition
    if collective == "scatter":
        offsets = partition(count, n)
        index = np.arange(offsets[rank], offsets[rank + 1])
        return index, np.full(index.size, 1 << root)
    per = count // n
    if collective == "gather":
        return (np.arange(count), np.repeat(1 << np.arange(n, dtype=np.int64), per)) if rank == root else None
    offsets = partition(per, n)
    index = np.concatenate([np.arange(r * per + offsets[rank], r * per + offsets[rank + 1]) for r in range(n)])
    masks = np.repeat(1 << np.arange(n, dtype=np.int64), offsets[rank + 1] - offsets[rank])
    return index, masks


def expected_masks(collective, n, count, root, rank):
    """(indices, masks) the result of `rank` should decode to (None: no result there)."""
    everyone = (1 << n) - 1
    if collective in ("allreduce",):
        return np.arange(count), np.full(count, everyone)
    if collective == "reduce":
        return (np.arange(count), np.full(count, everyone)) if rank == root else None
    if collective == "reduce_scatter":
        from collectives import partition
        offsets = partition(count, n)
        index = np.arange(offsets[rank], offsets[rank + 1])
        return index, np.full(index.size, everyone)
    if collective == "broadcast":
        return np.arange(count), np.full(count, 1 << root)
    if collective in ("alltoall", "gather", "scatter"):
        return _movement_masks(collective, n, count, root, rank)
    per = count // n
    return np.arange(count), np.repeat(1 << np.arange(n, dtype=np.int64), per)


def record(collective, algorithm, n, count, root=0, ranks_per_node=None, chunks=None):
    """Run the algorithm on the unit-clock simulator; returns (events with data, results)."""
    xs, _ = inputs(collective, n, count, root)
    network = Network(alpha=1.0, beta=0.0, gamma=0.0, ranks_per_node=ranks_per_node, shm_alpha=1.0, shm_beta=0.0)
    sim = simulate(n, lambda comm: _call(comm, collective, xs[comm.rank].copy(), algorithm, root),
                   network, sizes=[1], real_nbytes=1, record=True, keep_data=True, pipeline_chunks=chunks)
    return sim.events, sim.results


def schedule(algorithm, collective="allreduce", n=4, count=8, root=0, ranks_per_node=None, chunks=None):
    """Record and interpret one run: the Schedule (messages per step, holdings per step)."""
    if not 1 <= n <= MAX_RANKS:
        raise ValueError(f"n must be in [1, {MAX_RANKS}] (values encode one bit per rank), got {n}")
    if collective in SHARDED_INPUT:
        count = max(1, count // n) * n
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    events, results = record(collective, algorithm, n, count, root, ranks_per_node, chunks)
    _, held = inputs(collective, n, count, root)
    messages, changes = [], []            # changes: (step, rank, decoded data)
    for event in events:
        step = int(round(event["end"]))
        data = event.get("data", {})
        if "recv" in data:                 # in the receive buffer once arrived, even if used later
            step = int(round(event["args"].get("arrived", event["end"])))
            index, masks = decode(np.asarray(data["recv"]).reshape(-1), n)
            messages.append(Message(step, event["args"]["recv_peer"], event["rank"],
                                    event["args"]["recv_bytes"], runs(index, masks), event["cat"] == "shm"))
            changes.append((step, event["rank"], index, masks))
        if "result" in data:
            step = int(round(event["end"]))
            index, masks = decode(np.asarray(data["result"]).reshape(-1), n)
            changes.append((step, event["rank"], index, masks))
    last = max([m.step for m in messages] + [c[0] for c in changes] + [0])
    holdings = [held.copy()]
    for step in range(1, last + 1):
        for when, rank, index, masks in changes:
            if when != step:
                continue
            ok = index >= 0
            index, masks = index[ok], masks[ok]
            better = popcount(masks) >= popcount(held[rank, index])
            held[rank, index[better]] = masks[better]
        holdings.append(held.copy())
    messages.sort(key=lambda m: (m.step, m.read) + ((m.dst, m.src) if m.read else (m.src, m.dst)))
    result = Schedule(collective, algorithm, n, count, root, messages, holdings, events, results)
    result.ok = all(_matches(results[r], expected_masks(collective, n, count, root, r), n) for r in range(n))
    return result


def _matches(result, expected, n):
    if expected is None:
        return True
    index, masks = decode(np.asarray(result).reshape(-1), n)
    return np.array_equal(index, expected[0]) and np.array_equal(masks, expected[1])


# -- printing ----------------------------------------------------------------------------------------
def columns(s):
    """Element boundaries where some rank's holdings differ at some step: the grid columns."""
    cuts = {0, s.count}
    for held in s.holdings:
        cuts.update((np.flatnonzero(np.any(held[:, 1:] != held[:, :-1], axis=0)) + 1).tolist())
    cuts = sorted(cuts)
    return list(zip(cuts, cuts[1:]))


def format_schedule(s):
    n, lines = s.n, []
    lines.append(f"{s.algorithm} {s.collective} on {n} ranks, {s.count} elements"
                 + (f", root {s.root}" if s.collective in ("broadcast", "reduce") else "")
                 + ": recorded by running it")
    lines.append(f"(int64 sum; rank r's element i is i*2^{n} + 2^r, so every value names the ranks it "
                 "contains: {0,3} = ranks 0 and 3)")
    lines.append("(unit clock: a message takes one step; each rank sends one and receives one per step;"
                 " a shared-memory sync point takes one step, reading a peer's slot none)")
    grid = columns(s)
    heads = [f"[{a}:{b})" for a, b in grid]
    width = max([len(h) for h in heads] + [len(ranks_text(held[r, a], n)) + 1 for held in s.holdings
                                           for r in range(n) for a, _ in grid]) + 2

    def table(held, previous):
        cells = [[ranks_text(held[r, a], n) + ("*" if previous is not None and
                                                 held[r, a] != previous[r, a] else "")
                  for a, _ in grid] for r in range(n)]
        out = ["    " + " " * 8 + "".join(h.ljust(width) for h in heads)]
        out += [f"    rank {r:<3}" + "".join(c.ljust(width) for c in cells[r]) for r in range(n)]
        return out

    lines.append("")
    lines.append("start: what each rank holds")
    lines += table(s.holdings[0], None)
    for step in range(1, s.steps + 1):
        lines.append("")
        lines.append(f"step {step}")
        syncs = sorted({e["args"]["flag"] for e in s.events if e["name"].startswith("shm sync")
                        and int(round(e["end"])) == step})
        if syncs:
            lines.append(f"  shared-memory sync point (flag {', '.join(map(str, syncs))}): every rank has "
                         "published what it wrote so far and sees every peer's flag")
        for m in (m for m in s.messages if m.step == step):
            carried = "  ".join(f"[{a}:{b}) {ranks_text(mask, n)}" for a, b, mask in m.runs) or "(nothing)"
            if m.read:
                lines.append(f"  rank {m.dst:>2} reads rank {m.src}'s slot  {carried}   ({m.nbytes} B)")
            else:
                lines.append(f"  rank {m.src:>2} -> rank {m.dst:<2}  {carried}   ({m.nbytes} B)")
        lines.append("  holds after the step (* = changed):")
        lines += table(s.holdings[step], s.holdings[step - 1])
    sent = [sum(m.nbytes for m in s.messages if m.src == r and not m.read) for r in range(n)]
    reads = [sum(m.nbytes for m in s.messages if m.dst == r and m.read) for r in range(n)]
    messages = sum(not m.read for m in s.messages)
    lines.append("")
    lines.append(f"{s.steps} steps, {messages} messages; bytes sent per rank: "
                 f"{min(sent) if sent else 0}..{max(sent) if sent else 0} "
                 f"(the buffer is {s.count * 8} B)")
    if any(reads):
        lines.append(f"shared segment: {len(s.messages) - messages} reads of peers' slots; bytes read per rank: "
                     f"{min(reads)}..{max(reads)}")
    lines.append(f"result check: {'OK, every rank holds what ' + s.collective + ' promises' if s.ok else 'FAILED'}")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench.explain",
                                     description="Print an algorithm's schedule step by step, "
                                                 "recorded by running the real code.")
    parser.add_argument("algorithm", help="e.g. ring, tree, recursive_doubling, rabenseifner, pipeline")
    parser.add_argument("-n", "--ranks", type=int, default=4)
    parser.add_argument("--count", type=int, default=8, help="elements in the vector (allgather: the output)")
    parser.add_argument("--collective", default="allreduce", choices=COLLECTIVES)
    parser.add_argument("-r", "--root", type=int, default=0, help="root (broadcast, reduce)")
    parser.add_argument("--chunks", type=int, default=None, help="pipeline chunks (tree, pipeline)")
    parser.add_argument("--ranks-per-node", type=int, default=None, help="node size (hierarchical)")
    parser.add_argument("--png", metavar="FILE", help="also draw the schedule (ranks x steps)")
    return parser


def main(argv=None, out=sys.stdout):
    args = build_parser().parse_args(argv)
    valid = algorithm_names(args.collective, args.ranks, args.ranks_per_node, shared_memory=True)
    if args.algorithm not in valid:
        raise SystemExit(f"unknown {args.collective} algorithm {args.algorithm!r}: valid here are {valid}"
                         + ("" if args.ranks_per_node else " (hierarchical needs --ranks-per-node)"))
    if not 0 <= args.root < args.ranks:
        raise SystemExit(f"--root must be in [0, {args.ranks}), got {args.root}")
    try:
        s = schedule(args.algorithm, args.collective, args.ranks, args.count, args.root,
                     args.ranks_per_node, args.chunks)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(format_schedule(s), file=out)
    if args.png:
        from bench.plot import schedule_diagram
        schedule_diagram(s, args.png)
        print(f"diagram: {args.png}", file=out)
    return 0 if s.ok else 1


if __name__ == "__main__":
    sys.exit(main())
