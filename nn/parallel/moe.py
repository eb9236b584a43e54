"""Expert parallelism: a mixture-of-experts layer whose experts are sharded over the ranks.

Each rank holds the experts cc.partition(E, n)[rank] (E/n of them when n divides E) and
a replica of the gate. A token goes to one expert (top-1): the gate's largest logit picks
it, and the expert's output is scaled by the gate's softmax probability for it, so the
gate learns through that factor (as in the Switch Transformer). One forward:

    1. route: sort this rank's tokens by expert (stable: token order kept within an expert)
    2. all-gather the per-expert token counts (every rank learns the whole routing table)
    3. all-to-all(v): each token to the rank that holds its expert
    4. each local expert processes its tokens (grouped by expert, source ranks in order)
    5. all-to-all(v) back, unsort, scale by the gate probability

`all_to_all` is an autograd Function whose backward is the conjugate all-to-all (the
counts swapped), so backward runs two more all-to-alls and each expert's weight gradient
collects the contributions of every rank's tokens. The gate is replicated: its gradient
on each rank covers that rank's tokens only and is summed over ranks like any
data-parallel parameter (`replicated_parameters()`).

With comm=None the layer is the unsharded one (all experts here, no communication): the
reference the sharded layer equals. Parameters come from `seed` per expert, so every
rank builds its experts with exactly the unsharded layer's weights.
"""
from collections import OrderedDict

import numpy as np

import collectives as cc

from .. import functional as F
from ..autograd import Function
from ..init import linear_parameters
from ..modules import Linear, Module, Parameter, ReLU, Sequential
from ..tensor import concatenate, split


class _AllToAll(Function):
    @staticmethod
    def forward(ctx, x, comm, send_rows, recv_rows):
        ctx.comm, ctx.send_rows, ctx.recv_rows, ctx.shape = comm, send_rows, recv_rows, x.shape
        return _exchange(x, comm, send_rows, recv_rows)

    @staticmethod
    def backward(ctx, grad):
        return _exchange(grad, ctx.comm, ctx.recv_rows, ctx.send_rows), None, None, None


def _exchange(x, comm, send_rows, recv_rows):
    """alltoallv of the rows of x (2-D): send_rows[j] rows to rank j, recv_rows[i] from i."""
    width = x.shape[1]
    flat = np.ascontiguousarray(x).reshape(-1)
    out = comm.alltoallv(flat, [r * width for r in send_rows], [r * width for r in recv_rows])
    return out.reshape(-1, width)


def all_to_all(x, comm, send_rows, recv_rows):
    """Rows of the 2-D tensor x to the ranks (send_rows[j] consecutive rows to rank j);
    returns the rows received (recv_rows[i] from rank i, in rank order). Backward: the
    conjugate all-to-all of the gradient. Cost: one alltoallv each way."""
    return _AllToAll.apply(x, comm, list(send_rows), list(recv_rows))


class _SeededLinear(Linear):
    """A Linear whose parameters come from its own seed rather than the nn generator."""

    def __init__(self, in_features, out_features, seed, dtype):
        Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        weight, bias = linear_parameters(in_features, out_features, True, dtype, seed=seed)
        self.weight, self.bias = Parameter(weight), Parameter(bias)


def _linear(in_features, out_features, seed, dtype):
    return _SeededLinear(in_features, out_features, seed, dtype)


def expert(d_model, d_hidden, index, seed=0, dtype=np.float32):
    """Expert `index`: Linear(d_model, d_hidden) -> ReLU -> Linear(d_hidden, d_model), its
    weights drawn from (seed, index) alone, whichever rank builds it."""
    base = seed * 1_000_003 + 2 * index + 1
    return Sequential(_linear(d_model, d_hidden, base, dtype), ReLU(), _linear(d_hidden, d_model, base + 1, dtype))


class MixtureOfExperts(Module):
    """Top-1 mixture of `num_experts` MLP experts, sharded over `comm` (see module doc).

    forward(x): x of shape (tokens, d_model), this rank's tokens; returns the same shape.
    Experts are registered under their global index (experts.<e>.0.weight, ...).
    Cost per forward with comm: one all-gather of n*E token counts and two alltoallv of
    the routed tokens (tokens * d_model elements); the same two again in backward.
    """

    def __init__(self, d_model, d_hidden, num_experts, comm=None, seed=0, dtype=np.float32,
                 algorithm="auto"):
        super().__init__()
        if comm is not None and num_experts < comm.size:
            raise ValueError(f"{num_experts} experts cannot be sharded over {comm.size} ranks: "
                             f"give every rank at least one")
        self.d_model, self.num_experts, self.comm = d_model, num_experts, comm
        self.algorithm = algorithm              # of the counts' all-gather
        self.routing = None                     # (rows sent to, rows received from) each rank, last forward
        size, rank = (comm.size, comm.rank) if comm is not None else (1, 0)
        self.owners = cc.partition(num_experts, size)       # rank j holds [owners[j], owners[j+1])
        self.local = range(self.owners[rank], self.owners[rank + 1])
        self.gate = _linear(d_model, num_experts, seed * 1_000_003, dtype)
        self.experts = Sequential(OrderedDict((str(e), expert(d_model, d_hidden, e, seed, dtype))
                                              for e in self.local))

    def replicated_parameters(self):
        """The gate's parameters: the same on every rank, their gradients to be summed."""
        return list(self.gate.parameters())

    def forward(self, x):
        """Route each token to its expert, process it there, bring it back scaled by its
        gate probability."""
        logits = self.gate(x)
        choice = np.argmax(logits.data, axis=1)
        onehot = (np.arange(self.num_experts) == choice[:, None]).astype(x.dtype)
        weight = (F.softmax(logits, axis=-1) * onehot).sum(axis=1, keepdims=True)
        order = np.argsort(choice, kind="stable")
        counts = np.bincount(choice, minlength=self.num_experts)
        tokens = x[order]
        if self.comm is None or self.comm.size == 1:
            outputs = self._experts(tokens, counts)
        else:
            outputs = self._dispatched(tokens, counts)
        return outputs[np.argsort(order, kind="stable")] * weight

    def _experts(self, grouped, sizes):
        """Each local expert on its consecutive rows of `grouped` (sizes[i] rows for the
        i-th local expert)."""
        pieces = split(grouped, [int(s) for s in sizes])
        return concatenate([module(piece) for module, piece in zip(self.experts, pieces)])

    def _dispatched(self, tokens, counts):
        """Steps 2-5 of the module doc for tokens sorted by expert."""
        comm, owners = self.comm, self.owners
        table = comm.allgather(counts.astype(np.int64), algorithm=self.algorithm).reshape(comm.size, -1)
        mine = slice(owners[comm.rank], owners[comm.rank + 1])
        send = [int(counts[owners[j]:owners[j + 1]].sum()) for j in range(comm.size)]
        recv = [int(table[i, mine].sum()) for i in range(comm.size)]
        self.routing = (send, recv)
        received = all_to_all(tokens, comm, send, recv)
        # received: per source rank, its tokens for my experts in expert order; regroup by expert
        starts = np.concatenate([[0], np.cumsum(table[:, mine].reshape(-1))]).reshape(-1)
        local = table[:, mine]
        n_local = local.shape[1]
        perm = np.concatenate([np.arange(starts[i * n_local + e], starts[i * n_local + e + 1])
                               for e in range(n_local) for i in range(comm.size)]).astype(np.int64)
        grouped = received[perm]
        outputs = self._experts(grouped, local.sum(axis=0))
        back = outputs[np.argsort(perm, kind="stable")]
        return all_to_all(back, comm, recv, send)

    def extra_repr(self):
        return (f"d_model={self.d_model}, num_experts={self.num_experts}, "
                f"local experts {self.local.start}..{self.local.stop - 1}")
