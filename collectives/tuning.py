"""The alpha-beta-gamma cost model behind algorithm="auto", and the tuning file.

A message of m bytes costs alpha + m*beta to move, and reducing m bytes costs m*gamma
(Hockney's model as used by Thakur, Rabenseifner and Gropp 2005; the ring's cost is that
of Patarasuk and Yuan 2009). Every formula is linear in the three parameters:

    time = a*alpha + b*beta + c*gamma,   (a, b, c) = coefficients(...)

so measured times can be fitted by least squares (`fit`; `python -m bench.tune` measures
and fits). The pipelined tree and chain algorithms depend on their chunk count k, which
the algorithm picks from the model (`algorithm_chunks`); their coefficients are those for
the k actually used. Alpha includes our per-step Python overhead, which is why it is larger
than MPI's wire latency.

"auto" picks the algorithm with the smallest prediction. The shared-memory algorithms
have their own two parameters (a sync point, a pass over a byte of the segment; see
CostModel), fitted in the same solve, and a call small enough to keep its data in the
caches passes and reduces its bytes at cache prices (CostModel.cache_*; not fitted, and
absent from the simulator, whose memory has no caches). A tuning file written by
`bench.tune` (JSON; $COLLECTIVES_TUNING, else ~/.cache/collectives/tuning.json) is read
lazily, once (`current`): its fitted alpha, beta and gamma replace DEFAULT, and at the
world size it was measured at, "auto" takes the fastest *measured* algorithm at the
nearest measured size instead of the model's guess. Without a file, DEFAULT.
"""
import json
import math
import os
import warnings
from dataclasses import asdict, astuple, dataclass, field, fields
from itertools import combinations

from .files import write_atomically
from .partition import largest_power_of_two

TUNING_ENV = "COLLECTIVES_TUNING"
FILE_VERSION = 1


@dataclass(frozen=True)
class CostModel:
    alpha: float = 25e-6       # seconds per message step (latency + per-call overhead)
    beta: float = 1 / 2.5e9    # seconds per byte moved
    gamma: float = 1 / 4e9     # seconds per byte reduced
    # The shared segment (collectives/algorithms/shm.py), a memory-bandwidth model: a sync
    # point (post a flag, wait for every peer's) costs shm_alpha; every byte a rank writes
    # into the segment or reads out of it (a peer's slot or its own) costs shm_beta, one pass
    # over memory; a byte reduced costs gamma on top. Defaults until bench.tune fits them:
    # a sync 0.8 of a message step (2 ranks, a core each: fitted 47 us against alpha's 56,
    # and one-shot 1.5-2.1x faster than recursive doubling from 8 B to 32 KiB, which an
    # equal price made "auto" pick at n=2); a pass a third of an MPI byte (which is two
    # copies and a queue).
    shm_alpha: float = 20e-6
    shm_beta: float = 1 / 7.5e9
    # A shared-memory call whose segment bytes (every rank's copy of the buffer, n times its
    # size) fit in cache_bytes runs from the caches: it passes a byte at cache_beta and
    # reduces one at cache_gamma instead. One-shot reads n copies and reduces n-1 where
    # two-shot saves a sync point, so memory prices made "auto" leave one-shot at 22 KiB
    # (4 ranks), where it measured 1.6-2.3 times faster than two-shot at 32-64 KiB. On one
    # core of the 2-core machine a copy in cache ran at 31 GB/s and np.add at 16-20 GB/s;
    # with these prices one-shot leaves at 94 KiB at 4 ranks (measured: 128-256 KiB with 2
    # ranks per core, 64-128 KiB with a core each) and at 320 KiB at 2 ranks (measured:
    # 256-512 KiB). 1 MiB is this machine's L2 per core; one-shot at 4 x 512 KiB ran at
    # memory speed (one bench.tune table refitted with 1 MiB: the pick within 10% at 10 of
    # 11 sizes; with 2-4 MiB, 9). Not fitted by bench.tune (it fits the rest around them);
    # 0 bytes: no cache, as in the simulator.
    cache_bytes: float = 1 << 20
    cache_beta: float = 1 / 30e9
    cache_gamma: float = 1 / 18e9

    def step(self, nbytes, reduced=0.0):
        """Time of one step that moves `nbytes` and reduces `reduced` bytes."""
        return self.alpha + nbytes * self.beta + reduced * self.gamma

    def time(self, coefficients):
        """a*alpha + b*beta + c*gamma for coefficients (a, b, c)."""
        a, b, c = coefficients
        return a * self.alpha + b * self.beta + c * self.gamma

    @property
    def shared(self):
        """The model the shared-memory algorithms' coefficients are priced with out of
        cache: alpha a sync point (shm_alpha), beta a pass over a byte of the segment
        (shm_beta), gamma as here."""
        return CostModel(self.shm_alpha, self.shm_beta, self.gamma, self.shm_alpha, self.shm_beta, 0)

    def in_cache(self, segment_bytes):
        """Whether a shared-memory call whose data in the segment (every rank's copy: see
        `segment_bytes`) come to segment_bytes runs from the caches."""
        return segment_bytes <= self.cache_bytes

    def shared_for(self, segment_bytes):
        """`shared`, or where the call runs from the caches (`in_cache`) the same with
        cache_beta and cache_gamma for shm_beta and gamma."""
        if not self.in_cache(segment_bytes):
            return self.shared
        return CostModel(self.shm_alpha, self.cache_beta, self.cache_gamma, self.shm_alpha, self.cache_beta, 0)

    def for_algorithm(self, collective, algorithm, nbytes, n):
        """The model whose alpha, beta, gamma price `algorithm`'s coefficients on nbytes
        over n ranks: for the shared-memory algorithms (SHARED_MEMORY) `shared_for` their
        segment bytes, this one for the others."""
        if (collective, algorithm) not in SHARED_MEMORY:
            return self
        return self.shared_for(segment_bytes(collective, nbytes, n))


def segment_bytes(collective, nbytes, n):
    """The bytes a shared-memory call keeps in the segment at once, nbytes as
    `coefficients` takes it: the gathered buffer for all-gather, root's buffer for
    broadcast, every rank's copy of the buffer (n * nbytes) for the reductions."""
    return nbytes if collective in ("allgather", "broadcast") else n * nbytes


DEFAULT = CostModel()
# The tuning file's parameters, in CostModel's order; a file without the later ones (written
# before they existed) gets DEFAULT's.
PARAMETERS = tuple(f.name for f in fields(CostModel))
REQUIRED = ("alpha", "beta", "gamma")
# The algorithms that run through the shared segment, and their coefficients (priced by
# CostModel.shared): (sync points, bytes a rank passes through the segment, bytes
# reduced) for one round (a buffer that fits a staging half; each further round adds its
# sync points), as functions of the size m and the rank count n.
# oneshot: write m, read all n copies; twoshot: write all but its own block ((n-1)m/n; it
# reads that one from its input), read the n-1 peers' blocks of m/n, write the reduced
# block, read the n-1 other blocks back; shm_ring: write m/n, then per step read a peer's
# partial sum and write its own (m/n each), read all n back (its edge, a pass over x fused
# with the reduction, is outside this model); reduce-scatter: write m, read n blocks;
# all-gather (m: the output): write m/n, read (n-1)m/n; broadcast: root writes m, then the
# others read it; reduce: write m, root reads n.
SHARED_MEMORY_COEFFICIENTS = {
    ("allreduce", "oneshot"): lambda m, n: (1, (n + 1) * m, (n - 1) * m),
    ("allreduce", "twoshot"): lambda m, n: (2, (3 * n - 2) / n * m, (n - 1) / n * m),
    ("allreduce", "shm_ring"): lambda m, n: (n, (3 * n - 1) / n * m, (n - 1) / n * m),
    ("reduce_scatter", "shm"): lambda m, n: (1, 2 * m, (n - 1) / n * m),
    ("allgather", "shm"): lambda m, n: (1, m, 0.0),
    ("broadcast", "shm"): lambda m, n: (1, 2 * m, 0.0),
    ("reduce", "shm"): lambda m, n: (1, (n + 1) * m, (n - 1) * m),
}
SHARED_MEMORY = frozenset(SHARED_MEMORY_COEFFICIENTS)


def _log2_fold(n):
    """(p, log2 p, 1 if n is not a power of two else 0) for the doubling/halving family."""
    p = largest_power_of_two(n)
    return p, p.bit_length() - 1, int(p != n)


def bruck_blocks(n):
    """Blocks one rank sends in Bruck's all-to-all over n ranks: at step k, the slots
    i < n with bit k set."""
    total, k = 0, 1
    while k < n:
        total += sum(1 for i in range(n) if i & k)
        k *= 2
    return total


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
    return max(1, min(int(round(k)), int(nbytes // min_chunk)))


# The pipelined algorithms: (collective, algorithm) -> (tree arity, whether it reduces).
PIPELINED = {("allreduce", "tree"): (2, True),
             ("broadcast", "tree"): (2, False), ("broadcast", "pipeline"): (1, False),
             ("reduce", "tree"): (2, True), ("reduce", "pipeline"): (1, True)}


def algorithm_chunks(collective, algorithm, nbytes, n, model=None):
    """The pipeline chunk count the algorithm uses for nbytes on n ranks (1 if it has none)."""
    if (collective, algorithm) not in PIPELINED:
        return 1
    model = model or current().model
    arity, reduces = PIPELINED[(collective, algorithm)]
    per_byte = arity * (model.beta + (model.gamma if reduces else 0.0))
    return pipeline_chunks(nbytes, tree_depth(n, arity), per_byte, model)


def hierarchical_parts(nbytes, n, ranks_per_node):
    """Coefficients of the hierarchical all-reduce, split into (intra-node, inter-node):
    ring reduce-scatter and all-gather over the g ranks of a node, ring all-reduce of the
    node's 1/g share across the N = n/g nodes. (Through a segment, the node stages are the
    "shm" reduce-scatter and all-gather: `predict` prices them.)"""
    g = ranks_per_node or n
    nodes, m = n // g, float(nbytes)
    intra = (2 * (g - 1), 2 * (g - 1) / g * m, (g - 1) / g * m)
    inter = coefficients("allreduce", "ring", m / g, nodes)
    return intra, inter


def coefficients(collective, algorithm, nbytes, n, chunks=None, model=None, ranks_per_node=None):
    """(a, b, c) such that the predicted time is a*alpha + b*beta + c*gamma.

    nbytes is the input vector's size (for allgather: the gathered output's). `chunks` is
    the pipeline chunk count of tree/pipeline algorithms (default: what the algorithm
    would pick under `model`); `ranks_per_node` the node size for "hierarchical"
    (default: all ranks on one node).
    """
    m = float(nbytes)
    if n == 1:
        return (0.0, 0.0, 0.0)
    p, lg, fold = _log2_fold(n)
    clg = (n - 1).bit_length()            # ceil(log2 n)
    share, pshare = (n - 1) / n, (p - 1) / p
    if (collective, algorithm) in PIPELINED:
        arity, reduces = PIPELINED[(collective, algorithm)]
        k = chunks or algorithm_chunks(collective, algorithm, nbytes, n, model)
        steps = tree_depth(n, arity) + k - 1
        if collective == "allreduce":      # reduce up (2 children per step), broadcast down
            return (3 * steps, 4 * steps * m / k, 2 * steps * m / k)
        return (arity * steps, arity * steps * m / k, arity * steps * m / k if reduces else 0.0)
    table = {
        ("allreduce", "ring"): lambda: (2 * (n - 1), 2 * share * m, share * m),
        ("allreduce", "recursive_doubling"): lambda: (lg + 2 * fold, (lg + 2 * fold) * m, (lg + fold) * m),
        ("allreduce", "rabenseifner"): lambda: (2 * lg + 2 * fold, (2 * pshare + 2 * fold) * m,
                                                (pshare + fold) * m),
        ("allreduce", "hierarchical"): lambda: tuple(
            x + y for x, y in zip(*hierarchical_parts(m, n, ranks_per_node))),
        ("reduce_scatter", "ring"): lambda: (n - 1, share * m, share * m),
        ("reduce_scatter", "recursive_halving"): lambda: (lg + 2 * fold, pshare * m + fold * (m + m / n),
                                                          pshare * m + fold * m),
        ("allgather", "ring"): lambda: (n - 1, share * m, 0.0),
        ("allgather", "recursive_doubling"): lambda: (lg + 2 * fold, pshare * m + fold * (m + m / n), 0.0),
        # reduce by ring: ring reduce-scatter, then one gather step into root
        ("reduce", "ring"): lambda: (n, 2 * share * m, share * m),
        # nbytes: one rank's send buffer (alltoall) / the gathered buffer (gather, scatter)
        ("alltoall", "pairwise"): lambda: (n - 1, share * m, 0.0),
        ("alltoall", "linear"): lambda: (n - 1, share * m, 0.0),
        ("alltoall", "bruck"): lambda: (clg, bruck_blocks(n) * math.ceil(m / n), 0.0),
        ("alltoallv", "pairwise"): lambda: (n - 1, share * m, 0.0),
        ("alltoallv", "linear"): lambda: (n - 1, share * m, 0.0),
        ("gather", "tree"): lambda: (clg, share * m, 0.0),
        ("gather", "linear"): lambda: (n - 1, share * m, 0.0),
        ("scatter", "tree"): lambda: (clg, share * m, 0.0),
        ("scatter", "linear"): lambda: (n - 1, share * m, 0.0),
        ("scan", "recursive_doubling"): lambda: (clg, clg * m, clg * m),
        ("exscan", "recursive_doubling"): lambda: (clg, clg * m, 2 * clg * m),
    }
    shared = SHARED_MEMORY_COEFFICIENTS.get((collective, algorithm))
    if shared is not None:
        return shared(m, n)
    formula = table.get((collective, algorithm))
    if formula is None:
        raise ValueError(f"no cost formula for {collective} algorithm {algorithm!r}")
    return formula()


def predict(collective, algorithm, nbytes, n, model=None, chunks=None, ranks_per_node=None, inter=None,
            shared_memory=False):
    """Predicted seconds for `collective` by `algorithm` on n ranks (see `coefficients`).

    model: the CostModel (default: the tuning file's, else DEFAULT); the shared-memory
    algorithms are priced by its `shared_for` part (in cache or not). inter: a CostModel
    for links between nodes of `ranks_per_node` ranks (a two-level network; intra-node
    links follow `model`); given only for the algorithms with a two-level formula:
    "hierarchical", and "ring", whose every step waits for the one step that crosses
    nodes. shared_memory: the nodes have a segment, so "hierarchical" runs its node stages
    through it.
    """
    model = model or current().model
    if (collective, algorithm) == ("allreduce", "hierarchical") and (inter is not None or shared_memory):
        intra, across = hierarchical_parts(nbytes, n, ranks_per_node)
        slow = CostModel(inter.alpha, inter.beta, model.gamma) if inter is not None else model
        if shared_memory:                 # each node stage through the segment, at its own segment bytes
            node = sum(predict(stage, "shm", nbytes, ranks_per_node or n, model)
                       for stage in ("reduce_scatter", "allgather"))
        else:
            node = model.time(intra)
        return node + slow.time(across)
    if inter is not None and ranks_per_node and ranks_per_node < n:
        if algorithm == "ring":
            return CostModel(inter.alpha, inter.beta, model.gamma).time(coefficients(collective, algorithm, nbytes, n))
        raise ValueError(f"no two-level cost formula for {collective} algorithm {algorithm!r}")
    return model.for_algorithm(collective, algorithm, nbytes, n).time(
        coefficients(collective, algorithm, nbytes, n, chunks, model, ranks_per_node))


def choose(collective, candidates, nbytes, n, model=None, ranks_per_node=None):
    """The candidate expected to be fastest (ties: the first listed).

    With an explicit `model`: the smallest prediction. Otherwise the tuning file decides
    where it measured this collective at this world size, and its model elsewhere.
    `ranks_per_node` is the node size the "hierarchical" prediction needs.
    """
    if model is None:
        tuning = current()
        measured = tuning.measured_choice(collective, candidates, nbytes, n)
        if measured is not None:
            return measured
        model = tuning.model
    return min(candidates, key=lambda name: predict(collective, name, nbytes, n, model,
                                                    ranks_per_node=ranks_per_node))


# -- fitting ----------------------------------------------------------------------------------
def fit(rows, times, relative=True, shared_rows=(), shared_times=(), shared_cached=(), cache=None):
    """Least-squares alpha, beta, gamma (a CostModel) from coefficient rows (a, b, c) and the
    measured seconds of each row; with shared_rows (the shared-memory algorithms' (sync
    points, bytes passed, bytes reduced)) and their times, shm_alpha and shm_beta too, in
    the same solve, gamma common to both (the defaults stay where there are none).
    shared_cached marks the shared rows that ran from the caches (CostModel.in_cache): their
    bytes are priced at `cache`'s cache_beta and cache_gamma (default DEFAULT's), which are
    not fitted, so those rows pin shm_alpha only. The result keeps `cache`'s cache
    parameters.

    relative=True minimises the relative error of every row (each row divided by its
    time), so the microsecond rows that pin alpha weigh as much as the millisecond rows
    that pin beta. Parameters are kept non-negative: every subset of them is solved with
    numpy.linalg.lstsq and the best non-negative solution wins (zeros elsewhere).
    """
    import numpy as np
    cache = cache or DEFAULT
    A = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    S = np.asarray(shared_rows, dtype=np.float64).reshape(-1, 3)
    t = np.concatenate([np.asarray(times, dtype=np.float64).reshape(-1),
                        np.asarray(shared_times, dtype=np.float64).reshape(-1)])
    if A.shape[0] + S.shape[0] != t.size or A.shape[0] == 0:
        raise ValueError(f"fit needs one time per coefficient row and some message rows, got "
                         f"{A.shape[0]} + {S.shape[0]} rows and {t.size} times")
    if len(shared_cached) not in (0, S.shape[0]):
        raise ValueError(f"fit needs shared_cached for every shared row or none, got {len(shared_cached)} "
                         f"for {S.shape[0]} rows")
    cached = np.asarray(shared_cached, bool) if len(shared_cached) else np.zeros(S.shape[0], bool)
    # columns: alpha, beta, gamma, shm_alpha, shm_beta
    matrix = np.zeros((t.size, 5))
    matrix[:A.shape[0], :3] = A
    matrix[A.shape[0]:, 2:] = S[:, [2, 0, 1]]
    known = np.zeros(t.size)              # the cached rows' bytes, at the fixed cache prices
    rows_cached = A.shape[0] + np.flatnonzero(cached)
    known[rows_cached] = S[cached, 1] * cache.cache_beta + S[cached, 2] * cache.cache_gamma
    matrix[rows_cached, 2] = matrix[rows_cached, 4] = 0.0
    weight = 1 / t if relative else np.ones_like(t)
    solution = _nonnegative_lstsq(matrix * weight[:, None], (t - known) * weight)
    if not S.shape[0]:
        solution[3] = DEFAULT.shm_alpha
    if cached.all():                      # no row passed a byte at memory speed
        solution[4] = DEFAULT.shm_beta
    return CostModel(*map(float, solution), cache.cache_bytes, cache.cache_beta, cache.cache_gamma)


def _nonnegative_lstsq(A, t):
    """x >= 0 minimising |A x - t|: the best of the least-squares solutions on every subset
    of the columns that is non-negative (zeros elsewhere). Columns that are all zero stay 0."""
    import numpy as np
    used = [j for j in range(A.shape[1]) if np.any(A[:, j])]
    best, best_residual = np.zeros(A.shape[1]), math.inf
    for k in range(len(used), 0, -1):
        for columns in map(list, combinations(used, k)):
            sub = A[:, columns]
            norms = np.linalg.norm(sub, axis=0)
            solution = np.linalg.lstsq(sub / norms, t, rcond=None)[0] / norms
            if np.any(solution < 0):
                continue
            residual = float(np.linalg.norm(sub @ solution - t))
            if residual < best_residual * (1 - 1e-12):
                best_residual, best = residual, np.zeros(A.shape[1])
                best[columns] = solution
    return best


# -- the tuning file ---------------------------------------------------------------------------
@dataclass
class Tuning:
    """What "auto" knows: a model, and measured times per collective (see module docstring).

    measured: {collective: {"world_size": n, "sizes": [bytes...], "times": {algorithm:
    [seconds per size, or None]}}}
    """
    model: CostModel = DEFAULT
    measured: dict = field(default_factory=dict)
    path: str = None

    def measured_choice(self, collective, candidates, nbytes, n):
        """The fastest measured candidate at the measured size nearest nbytes (log scale),
        or None where nothing applies: another world size, a size more than a factor 2
        outside the measured range, or no candidate measured."""
        table = self.measured.get(collective)
        if not table or table.get("world_size") != n or not table.get("sizes"):
            return None
        sizes, times = table["sizes"], table["times"]
        if not sizes[0] / 2 <= max(nbytes, 1) <= sizes[-1] * 2:
            return None
        i = min(range(len(sizes)), key=lambda j: abs(math.log(sizes[j]) - math.log(max(nbytes, 1))))
        usable = [c for c in candidates if c in times and times[c][i] is not None]
        return min(usable, key=lambda c: times[c][i]) if usable else None


def default_path():
    """$COLLECTIVES_TUNING, else ~/.cache/collectives/tuning.json."""
    return os.environ.get(TUNING_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "collectives", "tuning.json")


def load(path):
    """The Tuning in `path`; Tuning() (DEFAULT, nothing measured) if there is no such file.
    A file that cannot be used is reported with a warning and ignored."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        model = CostModel(*(float(data[name] if name in REQUIRED else data.get(name, getattr(DEFAULT, name)))
                            for name in PARAMETERS))                      # files from before: defaults
        if data.get("version") != FILE_VERSION or min(astuple(model)) < 0:
            raise ValueError(f"version {data.get('version')!r} or negative parameters")
        return Tuning(model, data.get("measured", {}), path)
    except FileNotFoundError:
        return Tuning()
    except (OSError, ValueError, KeyError, TypeError) as error:
        warnings.warn(f"ignoring tuning file {path}: {error}; using the default cost model "
                      f"(rerun python -m bench.tune to rewrite it)", stacklevel=2)
        return Tuning()


def save(path, model, measured=None, **info):
    """Write a tuning file (atomically) with `model`, the `measured` tables and `info`."""
    data = {"version": FILE_VERSION, **asdict(model), **info, "measured": measured or {}}
    return write_atomically(path, lambda handle: json.dump(data, handle, indent=1))


_current = None


def current():
    """The Tuning "auto" uses: loaded from default_path() on first use, then kept."""
    global _current
    if _current is None:
        _current = load(default_path())
    return _current


def use(tuning=None):
    """Replace the Tuning in use (a Tuning, a path, or None to reload the file lazily)."""
    global _current
    _current = load(tuning) if isinstance(tuning, str) else tuning


def model_for(transport):
    """The model an algorithm running over `transport` plans with: the transport's own
    (a simulated network) if it declares one, else the current tuning's."""
    return transport.capabilities.cost_model or current().model
