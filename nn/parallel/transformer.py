"""A tensor-parallel transformer in the Megatron-LM style, built from the conjugate
operators of tensor.py and sequence.py. Every layer is made by sharding its unsharded twin
from nn.transformer (same parameter names, weights = exact slices), so a model built
after nn.manual_seed(s) holds slices of GPT(config) built after the same seed.

    VocabParallelEmbedding   rank r holds rows cc.partition(vocab, tp)[r] of the table;
                             tokens outside its rows contribute zero; the partial
                             embeddings are summed by one all-reduce (reduce-scatter along
                             the sequence with sequence parallelism).
    vocab_parallel_cross_entropy
                             logits stay split over the vocabulary: the row maxima are
                             all-reduced (max), then the sums of exponentials and the target
                             logits together (sum); the full (tokens, vocab) logits never
                             exist on one rank.
    ParallelAttention        q, k, v projected column-parallel by heads (rank r holds heads
                             cc.partition(n_heads, tp)[r]), attention over the local heads
                             only, output projection row-parallel: one all-reduce forward,
                             one backward.
    ParallelTransformerBlock the pre-LayerNorm block with ParallelAttention and a
                             column -> row parallel MLP: per block 2 all-reduces forward and
                             2 backward of the (B, T, C) activations.
    ParallelGPT              embeddings, blocks, final LayerNorm and the output head split
                             over the vocabulary (tied to the embedding or not).

sequence_parallel=True (Korthikanti et al. 2022): between the tensor-parallel regions
(LayerNorm, dropout, residual adds) each rank holds T/tp of the sequence; every all-reduce
above becomes a reduce-scatter (leaving a region) plus an all-gather (entering the next),
the same bytes, and the replicated parameters of those regions get their gradients summed
over the group (copy_to_parallel_region). T must divide by tp.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

import collectives as cc

from .. import functional as F
from ..autograd import Function
from ..modules import LayerNorm, Module, Parameter
from ..tensor import Tensor, array_module
from ..transformer import (
    GPT,
    MLP,
    CausalSelfAttention,
    Embedding,
    Generates,
    TransformerBlock,
    check_tokens,
)
from .sequence import (
    reduce_scatter_to_sequence_parallel_region,
    scatter_to_sequence_parallel_region,
)
from .tensor import (
    ColumnParallelLinear,
    RowParallelLinear,
    copy_to_parallel_region,
    reduce_from_parallel_region,
)

if TYPE_CHECKING:
    from collectives import Communicator

    from ..transformer import GPTConfig


def _need_at_least_one(what, count, comm):
    if count < comm.size:
        raise ValueError(f"cannot split {count} {what} over {comm.size} tensor-parallel ranks: every "
                         f"rank needs at least one (use tp <= {count})")


class VocabParallelEmbedding(Module):
    """An Embedding whose rows (the vocabulary) are split over `comm` (cc.partition).

    forward(idx) with the full (B, T) token ids on every rank: each rank looks up the tokens
    in its rows, zeroes the others, and one all-reduce of the (B, T, dim) result sums the
    partial embeddings (with sequence_parallel, a reduce-scatter leaves (B, T/tp, dim)).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, comm: Communicator, dtype: DTypeLike = np.float32,
                 std: float = 1.0, sequence_parallel: bool = False, algorithm: str = "auto", _weight: Any = None):
        super().__init__()
        _need_at_least_one("vocabulary rows", num_embeddings, comm)
        self.comm = comm
        self.algorithm = algorithm
        self.sequence_parallel = sequence_parallel
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        full = _weight if _weight is not None else Embedding(num_embeddings, embedding_dim, dtype, std).weight.data
        offsets = cc.partition(num_embeddings, comm.size)
        self.vocab_start, self.vocab_end = offsets[comm.rank], offsets[comm.rank + 1]
        self.weight = Parameter(array_module(full).array(full[self.vocab_start:self.vocab_end], dtype=full.dtype))

    @classmethod
    def from_embedding(cls, embedding: Embedding, comm: Communicator, **options: Any) -> VocabParallelEmbedding:
        """Shard an nn.Embedding: this rank keeps its rows. options: sequence_parallel, algorithm."""
        return cls(embedding.num_embeddings, embedding.embedding_dim, comm, _weight=embedding.weight.data,
                   **options)

    def forward(self, idx: Any) -> Tensor:
        """(B, T) ids -> (B, T, dim), or this rank's (B, T/tp, dim) with sequence_parallel."""
        xp = array_module(self.weight.data)
        idx = xp.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings):
            raise IndexError(f"embedding indices must lie in [0, {self.num_embeddings}) "
                             f"(rank {self.comm.rank}), got values up to {int(idx.max())}")
        elsewhere = (idx < self.vocab_start) | (idx >= self.vocab_end)
        local = F.embedding(xp.where(elsewhere, 0, idx - self.vocab_start), self.weight)
        partial = local.masked_fill(elsewhere[..., None], 0.0)
        if self.sequence_parallel:
            return reduce_scatter_to_sequence_parallel_region(partial, self.comm, self.algorithm)
        return reduce_from_parallel_region(partial, self.comm, self.algorithm)

    def extra_repr(self):
        return (f"{self.num_embeddings} ({self.vocab_start}:{self.vocab_end} here), {self.embedding_dim}, "
                f"rank {self.comm.rank} of {self.comm.size}")


class _VocabParallelCrossEntropy(Function):
    @staticmethod
    def forward(ctx, logits, targets, comm, vocab_start, algorithm):
        xp = array_module(logits)
        local = logits.reshape(-1, logits.shape[-1])                  # (N, V_r)
        t = xp.asarray(targets).reshape(-1)
        rows = xp.arange(local.shape[0])
        top = comm.allreduce(xp.ascontiguousarray(local.max(axis=1)), "max", algorithm=algorithm)
        exp = xp.exp(local - top[:, None])
        mine = (t >= vocab_start) & (t < vocab_start + local.shape[1])
        column = xp.where(mine, t - vocab_start, 0)
        picked = xp.where(mine, local[rows, column] - top, 0.0)
        # one all-reduce for both: row sums of exp, and the target's shifted logit (one rank has it)
        sums = comm.allreduce(xp.ascontiguousarray(xp.stack([exp.sum(axis=1), picked])), "sum",
                              algorithm=algorithm)
        ctx.softmax = exp / sums[0][:, None]
        ctx.hit = (rows[mine], column[mine])
        ctx.shape = logits.shape
        return (xp.log(sums[0]) - sums[1]).mean()

    @staticmethod
    def backward(ctx, grad):
        out = ctx.softmax.copy()
        out[ctx.hit] -= 1
        out *= grad / out.shape[0]
        return out.reshape(ctx.shape), None, None, None, None


def vocab_parallel_cross_entropy(logits: Tensor, targets: Any, comm: Communicator, vocab_size: int,
                                 algorithm: str = "auto") -> Tensor:
    """Mean cross-entropy of logits split over the vocabulary: this rank's (..., V_r)
    columns cc.partition(vocab_size, tp)[rank] against the full integer targets (...).

    Equals F.cross_entropy of the gathered logits. Cost: two all-reduces of N = number of
    tokens values (N maxima, then 2N sums); the gradient needs no communication.
    """
    offsets = cc.partition(vocab_size, comm.size)
    width = offsets[comm.rank + 1] - offsets[comm.rank]
    if logits.shape[-1] != width:
        raise ValueError(f"vocab_parallel_cross_entropy on rank {comm.rank}: expected this rank's "
                         f"{width} of {vocab_size} vocabulary columns, got logits of shape {logits.shape}")
    t = targets.data if isinstance(targets, Tensor) else targets
    if tuple(np.shape(t)) != tuple(logits.shape[:-1]):
        raise ValueError(f"targets of shape {tuple(np.shape(t))} do not match logits {logits.shape}")
    return _VocabParallelCrossEntropy.apply(logits, t, comm, offsets[comm.rank], algorithm)


def gather_vocab(local: Any, comm: Communicator, vocab_size: int) -> Any:
    """Full (..., vocab) array from every rank's (..., V_r) slice (padded to equal shares,
    all-gathered, trimmed). For sampling; training never needs it."""
    xp = array_module(local)
    offsets = cc.partition(vocab_size, comm.size)
    width = max(b - a for a, b in zip(offsets, offsets[1:]))
    padded = xp.zeros((width,) + local.shape[:-1], dtype=local.dtype)
    padded[:local.shape[-1]] = xp.moveaxis(local, -1, 0)
    gathered = comm.allgather(padded)
    pieces = [gathered[r * width:r * width + offsets[r + 1] - offsets[r]] for r in range(comm.size)]
    return xp.moveaxis(xp.concatenate(pieces), 0, -1)


class ParallelLayerNorm(LayerNorm):
    """LayerNorm with replicated weight and bias. With sequence_parallel each rank sees
    T/tp of the tokens, so the gradients of weight and bias are summed over the group."""

    def __init__(self, normalized_shape: int | tuple[int, ...], comm: Communicator, eps: float = 1e-5,
                 dtype: DTypeLike = np.float32, sequence_parallel: bool = False, algorithm: str = "auto"):
        super().__init__(normalized_shape, eps, dtype=dtype)
        self.comm = comm
        self.sequence_parallel = sequence_parallel
        self.algorithm = algorithm

    @classmethod
    def from_layer_norm(cls, norm: LayerNorm, comm: Communicator, **options: Any) -> ParallelLayerNorm:
        """A copy of `norm` (same weights) for the group `comm`."""
        out = cls(norm.normalized_shape, comm, norm.eps, norm.weight.dtype, **options)
        xp = array_module(norm.weight.data)               # copies where the weights live (NumPy or CuPy)
        out.weight.data, out.bias.data = xp.array(norm.weight.data), xp.array(norm.bias.data)
        return out

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight, self.bias
        if self.sequence_parallel:
            weight = copy_to_parallel_region(weight, self.comm, self.algorithm)
            bias = copy_to_parallel_region(bias, self.comm, self.algorithm)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


def _head_major(array, n_heads, rank_heads):
    """Rows of a fused [q | k | v] projection (3 * dim rows) regrouped so that each rank's
    heads are one block: [q, k, v of rank 0's heads | q, k, v of rank 1's heads | ...]."""
    head_dim = array.shape[0] // (3 * n_heads)
    blocks = []
    for start, end in zip(rank_heads, rank_heads[1:]):
        rows = slice(start * head_dim, end * head_dim)
        blocks += [array[part * n_heads * head_dim + rows.start:part * n_heads * head_dim + rows.stop]
                   for part in range(3)]
    return np.concatenate(blocks)


class ParallelAttention(CausalSelfAttention):
    """CausalSelfAttention with its heads split over `comm` (cc.partition(n_heads, tp)).

    c_attn is column-parallel: rank r holds the q, k and v rows of its heads, laid out
    [q | k | v] for those heads, so the inherited forward runs attention on the local heads.
    c_proj is row-parallel over the matching input columns: its partial outputs are summed
    by one all-reduce (forward); c_attn's copy_to_parallel_region all-reduces the input
    gradient (backward). Input and output: (B, T, dim), or (B, T/tp, dim) with
    sequence_parallel.
    """

    def __init__(self, dim: int, n_heads: int, comm: Communicator, bias: bool = True, dropout: float = 0.0,
                 dtype: DTypeLike = np.float32, sequence_parallel: bool = False, algorithm: str = "auto",
                 _full: CausalSelfAttention | None = None):
        full = _full or CausalSelfAttention(dim, n_heads, bias, dropout, dtype)
        _need_at_least_one("attention heads", full.n_heads, comm)
        Module.__init__(self)
        heads = cc.partition(full.n_heads, comm.size)
        head_dim = full.dim // full.n_heads
        self.dim, self.n_heads = full.dim, heads[comm.rank + 1] - heads[comm.rank]   # local heads
        self.total_heads = full.n_heads
        self.comm = comm
        options = {"sequence_parallel": sequence_parallel, "algorithm": algorithm}
        qkv = full.c_attn
        weights = (_head_major(qkv.weight.data, full.n_heads, heads),
                   None if qkv.bias is None else _head_major(qkv.bias.data, full.n_heads, heads))
        self.c_attn = ColumnParallelLinear(qkv.in_features, qkv.out_features, comm, bias=qkv.bias is not None,
                                           dtype=qkv.weight.dtype, offsets=[3 * head_dim * h for h in heads],
                                           _weights=weights, **options)
        self.c_proj = RowParallelLinear.from_linear(full.c_proj, comm, offsets=[head_dim * h for h in heads],
                                                    **options)
        self.resid_drop = copy.copy(full.resid_drop)

    @classmethod
    def from_attention(cls, attention: CausalSelfAttention, comm: Communicator, **options: Any) -> ParallelAttention:
        """Shard a CausalSelfAttention. options: sequence_parallel, algorithm."""
        return cls(attention.dim, attention.n_heads, comm, _full=attention, **options)

    def extra_repr(self):
        return f"dim={self.dim}, heads {self.n_heads} of {self.total_heads} here, rank {self.comm.rank}"


class ParallelMLPBranch(MLP):
    """The transformer MLP (c_fc -> activation -> c_proj -> dropout) with c_fc
    column-parallel and c_proj row-parallel over the hidden features."""

    def __init__(self, mlp: MLP, comm: Communicator, **options: Any):
        Module.__init__(self)
        self.c_fc = ColumnParallelLinear.from_linear(mlp.c_fc, comm, **options)
        self.act = copy.copy(mlp.act)
        self.c_proj = RowParallelLinear.from_linear(mlp.c_proj, comm, **options)
        self.drop = copy.copy(mlp.drop)


class ParallelTransformerBlock(TransformerBlock):
    """TransformerBlock (pre-LayerNorm) with attention heads and MLP hidden features split
    over `comm`. Communication per block, x of B*T*dim elements: without sequence
    parallelism 2 all-reduces of x forward and 2 backward; with it 2 all-gathers + 2
    reduce-scatters forward and the same backward (the same bytes), plus the small
    all-reduces of the LayerNorm and row-parallel bias gradients."""

    def __init__(self, dim: int, n_heads: int, comm: Communicator, hidden: int | None = None,
                 activation: str = "gelu", bias: bool = True, dropout: float = 0.0, dtype: DTypeLike = np.float32,
                 sequence_parallel: bool = False, algorithm: str = "auto", _full: TransformerBlock | None = None):
        full = _full or TransformerBlock(dim, n_heads, hidden, activation, bias, dropout, dtype)
        Module.__init__(self)
        options = {"sequence_parallel": sequence_parallel, "algorithm": algorithm}
        self.ln_1 = ParallelLayerNorm.from_layer_norm(full.ln_1, comm, **options)
        self.attn = ParallelAttention.from_attention(full.attn, comm, **options)
        self.ln_2 = ParallelLayerNorm.from_layer_norm(full.ln_2, comm, **options)
        self.mlp = ParallelMLPBranch(full.mlp, comm, **options)

    @classmethod
    def from_block(cls, block: TransformerBlock, comm: Communicator, **options: Any) -> ParallelTransformerBlock:
        """Shard a TransformerBlock. options: sequence_parallel, algorithm."""
        return cls(block.attn.dim, block.attn.n_heads, comm, _full=block, **options)


class ParallelGPT(Generates, Module):
    """GPT with every block, the embedding and the output head split over `comm` (the
    tensor-parallel group); the data-parallel dimension is DistributedDataParallel's.

    ParallelGPT(config, comm, sequence_parallel=False) draws GPT(config) from the nn
    generator and keeps this rank's slices; ParallelGPT.from_gpt(gpt, comm) shards an
    existing one. model(idx) -> this rank's vocabulary slice of the logits,
    (B, T, V_r); model(idx, targets) -> the mean loss by vocab_parallel_cross_entropy.
    Every rank of the group passes the same idx (and targets).
    """

    def __init__(self, config: GPTConfig, comm: Communicator, sequence_parallel: bool = False,
                 algorithm: str = "auto", _full: GPT | None = None):
        full = _full or GPT(config)
        super().__init__()
        self.config = config
        self.comm = comm
        self.sequence_parallel = sequence_parallel
        self.algorithm = algorithm
        options = {"sequence_parallel": sequence_parallel, "algorithm": algorithm}
        self.wte = VocabParallelEmbedding.from_embedding(full.wte, comm, **options)
        self.wpe = Embedding(config.block_size, config.n_embd, _weight=full.wpe.weight.data.copy())
        self.drop = copy.copy(full.drop)
        blocks = [ParallelTransformerBlock.from_block(block, comm, **options) for block in full.blocks]
        self.blocks = type(full.blocks)(*blocks)
        self.ln_f = ParallelLayerNorm.from_layer_norm(full.ln_f, comm, **options)
        if full.lm_head is not None:
            self.lm_head = ColumnParallelLinear.from_linear(full.lm_head, comm, **options)
        else:                                          # tied: the same Parameter, named wte.weight
            self.lm_head = ColumnParallelLinear(config.n_embd, config.vocab_size, comm, bias=False,
                                                _weights=(full.wte.weight.data, None), **options)
            self.lm_head.weight = self.wte.weight

    @classmethod
    def from_gpt(cls, gpt: GPT, comm: Communicator, sequence_parallel: bool = False,
                 algorithm: str = "auto") -> ParallelGPT:
        """Shard an existing GPT (its weights are copied, not shared)."""
        return cls(gpt.config, comm, sequence_parallel, algorithm, _full=gpt)

    def forward(self, idx: Any, targets: Any = None) -> Tensor:
        """This rank's logits slice (B, T, V_r) for token ids (B, T); with targets, the loss."""
        idx = check_tokens(idx, self.config)
        position = self.wpe(np.arange(idx.shape[1]))[None]              # (1, T, C)
        if self.sequence_parallel:
            position = scatter_to_sequence_parallel_region(position, self.comm, self.algorithm)
        x = self.drop(self.wte(idx) + position)
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        if targets is None:
            return logits
        return vocab_parallel_cross_entropy(logits, targets, self.comm, self.config.vocab_size, self.algorithm)

    def next_token_logits(self, idx: Any) -> Any:
        """The full (B, vocab) logits of the next token (gathered over the vocabulary; with
        sequence parallelism the context is padded at the end to a multiple of tp, which
        causal attention makes invisible to the positions before)."""
        idx = np.asarray(idx)
        length = idx.shape[1]
        if self.sequence_parallel and length % self.comm.size:
            pad = self.comm.size - length % self.comm.size
            idx = np.concatenate([idx[:, max(0, length + pad - self.config.block_size):],
                                  np.zeros((len(idx), pad), idx.dtype)], axis=1)
            length = idx.shape[1] - pad
        local = self(idx).data[:, length - 1]
        return gather_vocab(local, self.comm, self.config.vocab_size)
