"""The alpha-beta-gamma cost model behind algorithm="auto".

A message of m bytes costs alpha + m*beta to move, and reducing m bytes costs m*gamma
(Hockney's model as used by Thakur, Rabenseifner and Gropp 2005). Each algorithm's time is
predicted from its textbook formula; "auto" picks the algorithm with the smallest
prediction. Alpha here includes our per-step Python overhead, which is why it is larger
than MPI's wire latency.
"""
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CostModel:
    alpha: float = 25e-6       # seconds per message step (latency + per-call overhead)
    beta: float = 1 / 2.5e9    # seconds per byte moved
    gamma: float = 1 / 4e9     # seconds per byte reduced

    def step(self, nbytes, reduced=0.0):
        """Time of one step that moves `nbytes` and reduces `reduced` bytes."""
        return self.alpha + nbytes * self.beta + reduced * self.gamma


DEFAULT = CostModel()


def _log2_fold(n):
    """(p, log2 p, 1 if n is not a power of two else 0) for the doubling/halving family."""
    p = 1 << (n.bit_length() - 1)
    return p, p.bit_length() - 1, int(p != n)


def tree_depth(n, arity):
    """Depth of the k-ary heap-ordered tree over n ranks (arity 1: a chain of n-1 links)."""
    if arity == 1:
        return n - 1
    depth, reach, level = 0, 1, 1
    while reach < n:
        level *= arity
        reach += level
        depth += 1
    return depth


def pipeline_chunks(nbytes, depth, per_byte, model=DEFAULT, min_chunk=4096):
    """The chunk count k that minimises (depth + k - 1) * (alpha + nbytes/k * per_byte).

    d/dk = 0 gives k = sqrt((depth - 1) * nbytes * per_byte / alpha); chunks are kept at
    least `min_chunk` bytes so that per-chunk overhead never dominates.
    """
    if depth <= 1 or nbytes <= min_chunk:
        return 1
    k = math.sqrt((depth - 1) * nbytes * per_byte / model.alpha)
    return max(1, min(int(round(k)), nbytes // min_chunk))


def _pipelined(nbytes, depth, per_byte, alpha_per_step, model):
    k = pipeline_chunks(nbytes, depth, per_byte, model)
    return (depth + k - 1) * (alpha_per_step + nbytes / k * per_byte)


def predict(collective, algorithm, nbytes, n, model=DEFAULT):
    """Predicted seconds for `collective` by `algorithm` on n ranks; nbytes is the size of
    the input vector (for allgather: of the gathered output)."""
    a, b, g, m = model.alpha, model.beta, model.gamma, float(nbytes)
    if n == 1:
        return 0.0
    p, lg, fold = _log2_fold(n)
    share = (n - 1) / n
    pshare = (p - 1) / p
    if collective == "allreduce":
        if algorithm == "ring":
            return 2 * (n - 1) * a + 2 * share * m * b + share * m * g
        if algorithm == "recursive_doubling":
            return (lg + 2 * fold) * (a + m * b) + (lg + fold) * m * g
        if algorithm == "rabenseifner":
            return (2 * lg + 2 * fold) * a + (2 * pshare + 2 * fold) * m * b + (pshare + fold) * m * g
        if algorithm == "tree":
            d = tree_depth(n, 2)
            up = _pipelined(m, d, 2 * (b + g), 2 * a, model)
            down = _pipelined(m, d, 2 * b, a, model)
            return up + down
    if collective == "reduce_scatter":
        if algorithm == "ring":
            return (n - 1) * a + share * m * (b + g)
        if algorithm == "recursive_halving":
            return lg * a + pshare * m * (b + g) + fold * (2 * a + m * (b + g) + m / n * b)
    if collective == "allgather":
        if algorithm == "ring":
            return (n - 1) * a + share * m * b
        if algorithm == "recursive_doubling":
            return lg * a + pshare * m * b + fold * (2 * a + m * b + m / n * b)
    if collective in ("broadcast", "reduce"):
        per_byte = b if collective == "broadcast" else b + g
        if algorithm == "ring":   # reduce only: ring reduce-scatter, then gather to root
            return (n - 1) * a + share * m * (b + g) + a + share * m * b
        arity = {"tree": 2, "pipeline": 1}.get(algorithm)
        if arity is not None:
            return _pipelined(m, tree_depth(n, arity), arity * per_byte, arity * a, model)
    raise ValueError(f"no cost formula for {collective} algorithm {algorithm!r}")


def choose(collective, candidates, nbytes, n, model=DEFAULT):
    """The candidate with the smallest predicted time (ties: the first listed)."""
    return min(candidates, key=lambda name: predict(collective, name, nbytes, n, model))
