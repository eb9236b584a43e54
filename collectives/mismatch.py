"""Turning a call-tag mismatch found by the transport into an error that names both calls.

A message carries only its sender's call tag (sequence bits and a signature hash: see
collectives.transport.calls). The sender's signature is recovered by trying the calls it
most likely made: this rank's own call with one argument changed (another op, dtype,
count, root or algorithm), and the calls this rank made recently (a rank that skipped or
reordered calls). Only the error path pays for this.
"""
import itertools

from . import algorithms as registry
from .errors import CollectiveMismatch
from .flight import FIELDS, describe
from .ops import DTYPES, OPS

COUNT_RADIUS = 8        # counts tried on either side of this rank's own


def explain(error, recent, size):
    """A CollectiveMismatch like `error` (raised by a transport) whose message names this
    rank's call and, where it can be recovered, the peer's; `recent` lists signatures this
    rank called lately, `size` is the communicator's size."""
    theirs = None
    if error.tags is not None and error.signature is not None:
        likely = (list(_one_change(error.signature, size)) + [tuple(s) for s in recent]
                  + list(_other_collectives(error.signature, size)))
        theirs = recover(error.peer_sequence, error.peer_tag, error.tags, likely)
    rank, peer = error.rank, error.peer
    mine = f"{describe(error.signature)} #{error.sequence}" if error.signature else f"call #{error.sequence}"
    if theirs is not None:
        peer_call = f"{describe(theirs)} #{error.peer_sequence}"
        detail = _difference(error.signature, theirs, rank, peer)
    else:
        peer_call = (f"call #{error.peer_sequence} with other arguments (not recovered from its "
                     f"message tag {error.peer_tag:#x}; its flight record has them)")
        detail = ""
    message = (f"rank {rank}: ranks {peer} and {rank} called differently: rank {peer} called {peer_call}, "
               f"rank {rank} called {mine}.{detail} (Rank {rank} found out on receiving a message from "
               f"rank {peer}.) Every rank must call the same collectives in the same order with the "
               f"same arguments.")
    return CollectiveMismatch(message, rank=error.rank, peer=error.peer, sequence=error.sequence,
                              signature=error.signature, peer_sequence=error.peer_sequence,
                              peer_tag=error.peer_tag, peer_signature=theirs)


def recover(sequence, tag, tags, likely):
    """The signature among `likely` whose tag at `sequence` is `tag`, else None."""
    for candidate in likely:
        if tags.tag_of(sequence, candidate) == tag:
            return candidate
    return None


def _one_change(signature, size):
    """This signature with one argument replaced by each value it could plausibly take."""
    name, *args = signature
    labels = FIELDS.get(name, ())
    variants = []
    for position, (label, value) in enumerate(zip(labels, args)):
        for other in _values(label, value, name, size):
            if other != value:
                changed = list(args)
                changed[position] = other
                variants.append((name, *changed))
    return variants


def _other_collectives(signature, size):
    """Every collective called on the same count and dtype with any op, root and algorithm
    (a rank that skipped a call, or called another collective)."""
    labels = dict(zip(FIELDS.get(signature[0], ()), signature[1:]))
    count = labels.get("count", (labels.get("shape") or (1,))[0])
    dtype = labels.get("dtype", "float32")
    for name, fields in FIELDS.items():
        choices = [{"count": [count], "shape": [(count,)], "dtype": [dtype], "op": list(OPS),
                    "root": list(range(size)),
                    "algorithm": list(registry.ALGORITHMS.get(name, ())) + [registry.NATIVE]}[f]
                   for f in fields]
        yield from ((name, *values) for values in itertools.product(*choices))


def _values(label, value, collective, size):
    if label in ("count", "shape") and isinstance(value, (int, tuple)):
        first = value if isinstance(value, int) else (value[0] if value else 1)
        counts = [c for d in range(1, COUNT_RADIUS + 1) for c in (first - d, first + d) if c >= 0] + [0]
        return counts if isinstance(value, int) else [(c, *value[1:]) for c in counts]
    if label == "dtype":
        return [str(d) for d in DTYPES] + ["bfloat16"]
    if label == "op":
        return list(OPS)
    if label == "root" and isinstance(value, int):
        return list(range(size))
    if label == "algorithm":
        return list(registry.ALGORITHMS.get(collective, ())) + [registry.NATIVE]
    return []


def _difference(mine, theirs, rank, peer):
    """' (rank p passed op=max where rank r passed op=sum)' when one argument differs."""
    if mine[0] != theirs[0] or len(mine) != len(theirs):
        return ""
    labels = FIELDS.get(mine[0], ())
    changed = [(label, a, b) for label, a, b in zip(labels, mine[1:], theirs[1:]) if a != b]
    return "".join(f" Rank {peer} passed {label}={b} where rank {rank} passed {label}={a}."
                   for label, a, b in changed)
