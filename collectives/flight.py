"""The flight recorder: each rank remembers the last collectives it entered and left.

When a collective times out, every rank that notices writes its record to the job's
flight directory, reads the records of the other ranks that appear within a short grace
period, and puts a one-screen summary into its error: which ranks never entered which
call, or called collectives in a different order. `python -m collectives.flight DIR`
prints the same summary from the files.
"""
import functools
import glob
import json
import os
import socket
import sys
import tempfile
import time
from collections import deque

from .errors import TransportTimeout
from .files import write_atomically
from .observe import Observer

DEFAULT_CAPACITY = 128


class FlightRecorder(Observer):
    """A ring of the last `capacity` collectives this rank entered, with their fate; the
    Communicator's first observer.

    Entering and leaving a call is on every collective's path, so each costs one small
    list and a clock read: a slot [seq, signature, state, entered, left, details]. The
    dicts of `entries` and `current` (seq, call, signature, algorithm, state, entered,
    left and any details), with the call described in words, are built only when read:
    on a fault, a dump, or flight_record().
    """

    def __init__(self, rank, size, capacity=DEFAULT_CAPACITY):
        self.rank, self.size = rank, size
        self._slots = deque(maxlen=capacity)
        self._current = None
        self.ended = None                 # how the rank left, once it did (record_exit)

    def start(self, sequence, signature):
        """Collective number `sequence` with call `signature` starts on this rank."""
        self._current = [sequence, signature, "entered", time.time(), None, None]
        self._slots.append(self._current)

    def end(self, error=None):
        """The call in progress ended: completed (error None), timed out, or failed."""
        slot = self._current
        slot[4] = time.time()
        if error is None:
            slot[2] = "completed"
        elif isinstance(error, TransportTimeout):
            slot[2], slot[5] = "timed out", {"step": error.step, "peer": error.peer}
        else:
            slot[2], slot[5] = "failed", {"error": f"{type(error).__name__}: {error}"[:300]}

    def mark(self, state, **details):
        """Change the state of the call in progress (e.g. "mismatched"), adding details."""
        slot = self._current
        slot[2], slot[4] = state, time.time()
        slot[5] = {**(slot[5] or {}), **details}

    # the Observer interface, for whoever drives a recorder as an observer
    def call_started(self, sequence, signature):
        self.start(sequence, signature)

    def call_ended(self, sequence, signature, error):
        self.end(error)

    @property
    def current(self):
        """The entry (a dict) of the last call entered, or None."""
        return None if self._current is None else _entry(self._current)

    @property
    def entries(self):
        """The entries (dicts) of the calls remembered, oldest first."""
        return [_entry(slot) for slot in self._slots]

    @property
    def last(self):
        """The entry of the last call remembered, or None."""
        return _entry(self._slots[-1]) if self._slots else None

    def snapshot(self):
        return {"rank": self.rank, "size": self.size, "host": socket.gethostname(),
                "pid": os.getpid(), "written": time.time(), "entries": self.entries,
                "ended": self.ended}

    def remove(self, directory):
        """Remove this rank's record from `directory`, and the folder once it is empty."""
        try:
            os.remove(os.path.join(directory, f"rank{self.rank}.json"))
            os.rmdir(directory)
        except OSError:
            pass

    def dump(self, directory):
        """Write this rank's record atomically to DIRECTORY/rank<r>.json; returns the path."""
        snapshot = self.snapshot()
        return write_atomically(os.path.join(directory, f"rank{self.rank}.json"),
                                lambda handle: json.dump(snapshot, handle, indent=1))


def _entry(slot):
    """The dict a flight-record slot stands for."""
    sequence, signature, state, entered, left, details = slot
    entry = {"seq": sequence, "call": describe(signature), "signature": signature,
             "algorithm": signature[-1] if len(signature) > 1 else None,
             "state": state, "entered": entered, "left": left}
    if details:
        entry.update(details)
    return entry


# The errors that mean ranks lost each other (not a local error like a bad dtype, nor a
# mismatch, which every rank involved raises: a rank it leaves waiting times out).
_LOST_PEERS = ("CollectiveTimeout", "TransportError", "TransportTimeout", "MessageError")


def failed_between_ranks(entry):
    """True when a flight-record entry's call ended because ranks lost each other (a
    timeout, a broken message), so that other ranks may be left waiting."""
    state = entry.get("state")
    return state == "timed out" or (
        state == "failed" and str(entry.get("error", "")).split(":")[0] in _LOST_PEERS)


def default_directory(job_id):
    """Where a job's records go: $COLLECTIVES_FLIGHT_DIR, else a folder in the temp dir."""
    base = os.environ.get("COLLECTIVES_FLIGHT_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"collectives-flight-{job_id}")


def read_records(directory, size=None, wait=0.0):
    """The records in `directory` by rank, waiting up to `wait` seconds for all `size`."""
    deadline = time.monotonic() + wait
    while True:
        records = {}
        for path in glob.glob(os.path.join(directory, "rank*.json")):
            try:
                with open(path) as handle:
                    record = json.load(handle)
                records[record["rank"]] = record
            except (OSError, ValueError, KeyError):
                continue
        if size is None or len(records) >= size or time.monotonic() >= deadline:
            return records
        time.sleep(0.05)


def summarize(records, size, waiting=None):
    """A few lines saying which ranks never entered which call, or disagreed on order.

    `waiting` optionally maps this rank's view: {"rank": r, "seq": s, "peer": p}.
    """
    lines = []
    calls = {rank: {e["seq"]: e for e in record["entries"]} for rank, record in records.items()}
    stuck = sorted({e["seq"] for c in calls.values() for e in c.values()
                    if e["state"] not in ("completed",)})
    for seq in stuck[:3]:
        entered = {rank: c[seq] for rank, c in calls.items() if seq in c}
        variants = {}
        for rank, entry in entered.items():
            variants.setdefault(entry["call"], []).append(rank)
        if len(variants) > 1:
            names = {call.split("(")[0] for call in variants}
            how = "with different arguments" if len(names) == 1 else "differently (different order of calls?)"
            lines.append(f"collective #{seq} was called {how}:")
            lines += [f"  ranks {sorted(ranks)}: {call}" for call, ranks in sorted(variants.items())]
        call = max(variants, key=lambda c: len(variants[c])) if variants else "?"
        missing = [r for r in range(size) if r not in entered]
        for rank in missing:
            if rank in calls:
                last = max(calls[rank]) if calls[rank] else None
                where = f"its last call was #{last} {calls[rank][last]['call']}" if last else "it made no call"
                ended = records[rank].get("ended")
                lines.append(f"rank {rank} never entered #{seq} {call}: {where}"
                             + (f", and then it {ended}" if ended else ""))
            else:
                lines.append(f"rank {rank} sent no flight record: it is busy elsewhere (computing, or "
                             f"waiting in another call: its own timeout will say where) or it was killed; "
                             f"it did not report entering #{seq} {call}")
        unfinished = sorted(r for r, e in entered.items() if e["state"] != "completed")
        if unfinished:
            states = sorted({entered[r]["state"] for r in unfinished})
            lines.append(f"ranks {unfinished} did not complete #{seq} ({', '.join(states)})")
    if waiting and not lines:
        lines.append(f"rank {waiting['rank']} waited for rank {waiting['peer']} in #{waiting['seq']}")
    return "\n".join(lines) if lines else "no collective was left unfinished"


# The names of the arguments in each collective's call signature (after its name).
FIELDS = {"allreduce": ("count", "dtype", "op", "algorithm"),
          "reduce_scatter": ("count", "dtype", "op", "algorithm"),
          "alltoall": ("count", "dtype", "algorithm"),
          "alltoallv": ("dtype", "algorithm"),
          "gather": ("shape", "dtype", "root", "algorithm"),
          "scatter": ("count", "dtype", "root", "algorithm"),
          "scan": ("count", "dtype", "op", "algorithm"),
          "exscan": ("count", "dtype", "op", "algorithm"),
          "allgather": ("shape", "dtype", "algorithm"),
          "broadcast": ("count", "dtype", "root", "algorithm"),
          "reduce": ("count", "dtype", "op", "root", "algorithm"),
          "barrier": (), "allgather_object": (), "broadcast_object": ("root", "algorithm")}


def describe(signature):
    """'allreduce(count=10, dtype=float32, op=sum)' from a Communicator call signature
    (remembered for hashable signatures: the flight recorder asks on every call)."""
    try:
        return _describe_cached(signature)
    except TypeError:                     # a signature read back from JSON holds lists
        return _describe(signature)


@functools.lru_cache(maxsize=1024)
def _describe_cached(signature):
    return _describe(signature)


def _describe(signature):
    name, *args = signature
    labels = FIELDS.get(name, ())
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in zip(labels, args)) + ")"


def main(argv=None):
    """python -m collectives.flight DIR: summarise the flight records in DIR."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m collectives.flight DIR", file=sys.stderr)
        return 2
    records = read_records(argv[0])
    if not records:
        print(f"no flight records in {argv[0]}", file=sys.stderr)
        return 1
    size = max(r["size"] for r in records.values())
    for rank in sorted(records):
        entries = records[rank]["entries"]
        last = entries[-1] if entries else None
        print(f"rank {rank}: {len(entries)} calls recorded; last "
              + (f"#{last['seq']} {last['call']} [{last['state']}]" if last else "none"))
    print(summarize(records, size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
