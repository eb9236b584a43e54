"""Transformer pieces: token embedding, causal self-attention, the pre-LayerNorm block and a
small GPT (token + position embeddings, N blocks, final LayerNorm, tied or untied head).

Shapes are written (B, T, C): batch, sequence (time), channels. Parameter names follow
nanoGPT / GPT-2 ("blocks.0.attn.c_attn.weight"), and nn.parallel's ParallelGPT uses the
same names for its shards, so a sharded state_dict lines up with the unsharded one key by
key. Initialisation: Linear layers as nn.Linear (PyTorch's default), embeddings
N(0, 0.02) as GPT-2, LayerNorm weight 1 and bias 0, all drawn from the nn generator in
registration order (nn.manual_seed fixes the model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from . import functional as F
from .autograd import no_grad
from .modules import GELU, Dropout, LayerNorm, Linear, Module, Parameter, ReLU, Sequential
from .random import generator
from .tensor import Tensor, array_module


class Embedding(Module):
    """A lookup table: integer indices (any shape) -> rows of weight (num_embeddings, dim).

    weight ~ N(0, std^2) from the nn generator (PyTorch's default std is 1), or the given
    `_weight` array (used as is, nothing drawn; as PyTorch's _weight). The gradient of each
    row is the sum of the output gradients at the positions that used it.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: DTypeLike = np.float32, std: float = 1.0,
                 _weight: Any = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if _weight is None:
            _weight = (generator().standard_normal((num_embeddings, embedding_dim)) * std).astype(dtype)
        elif tuple(_weight.shape) != (num_embeddings, embedding_dim):
            raise ValueError(f"Embedding _weight has shape {tuple(_weight.shape)}, expected "
                             f"({num_embeddings}, {embedding_dim})")
        self.weight = Parameter(_weight)

    def forward(self, indices: Any) -> Tensor:
        """weight[indices]: shape indices.shape + (embedding_dim,)."""
        return F.embedding(indices, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, T, n_heads * D) -> (B, n_heads, T, D)."""
    b, t, c = x.shape
    return x.reshape(b, t, n_heads, c // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, D) -> (B, T, H * D): the inverse of split_heads."""
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def attend(qkv: Tensor, n_heads: int) -> Tensor:
    """Causal attention of a fused (B, T, 3 * n_heads * D) projection laid out [q | k | v]:
    returns (B, T, n_heads * D). Shared by the unsharded and the tensor-parallel layer."""
    q, k, v = (split_heads(part, n_heads) for part in split_qkv(qkv))
    return merge_heads(F.scaled_dot_product_attention(q, k, v, causal=True))


def split_qkv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Three equal slices of the last axis (views whose gradients land in place)."""
    third = x.shape[-1] // 3
    return x[..., :third], x[..., third:2 * third], x[..., 2 * third:]


class CausalSelfAttention(Module):
    """Multi-head causal self-attention: one fused projection to q, k, v (c_attn, rows
    laid out [q | k | v], head h using rows h*D:(h+1)*D of each), attention per head, an
    output projection (c_proj). Cost per sequence: O(T^2 C) multiply-adds for the scores."""

    def __init__(self, dim: int, n_heads: int, bias: bool = True, dropout: float = 0.0,
                 dtype: DTypeLike = np.float32):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} must divide evenly into {n_heads} heads")
        self.dim, self.n_heads = dim, n_heads
        self.c_attn = Linear(dim, 3 * dim, bias=bias, dtype=dtype)
        self.c_proj = Linear(dim, dim, bias=bias, dtype=dtype)
        self.resid_drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, dim) -> (B, T, dim)."""
        return self.resid_drop(self.c_proj(attend(self.c_attn(x), self.n_heads)))

    def extra_repr(self):
        return f"dim={self.dim}, n_heads={self.n_heads}"


_ACTIVATIONS = {"gelu": lambda: GELU(), "gelu_tanh": lambda: GELU("tanh"), "relu": ReLU}


class MLP(Module):
    """dim -> hidden (c_fc) -> activation -> dim (c_proj) -> dropout."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", bias: bool = True, dropout: float = 0.0,
                 dtype: DTypeLike = np.float32):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.c_fc = Linear(dim, hidden, bias=bias, dtype=dtype)
        self.act = _ACTIVATIONS[activation]()
        self.c_proj = Linear(hidden, dim, bias=bias, dtype=dtype)
        self.drop = Dropout(dropout)

    def forward(self, x):
        return self.drop(self.c_proj(self.act(self.c_fc(x))))


class TransformerBlock(Module):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, dim: int, n_heads: int, hidden: int | None = None, activation: str = "gelu",
                 bias: bool = True, dropout: float = 0.0, dtype: DTypeLike = np.float32):
        super().__init__()
        self.ln_1 = LayerNorm(dim, dtype=dtype)
        self.attn = CausalSelfAttention(dim, n_heads, bias, dropout, dtype)
        self.ln_2 = LayerNorm(dim, dtype=dtype)
        self.mlp = MLP(dim, hidden or 4 * dim, activation, bias, dropout, dtype)

    def forward(self, x):
        """(B, T, dim) -> (B, T, dim)."""
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


@dataclass
class GPTConfig:
    """The shape of a GPT."""
    vocab_size: int = 65          # number of token ids
    block_size: int = 64          # longest context (number of position embeddings)
    n_layer: int = 2              # transformer blocks
    n_head: int = 4               # attention heads per block
    n_embd: int = 64              # channels of the residual stream
    hidden: int = 0               # MLP hidden width; 0 means 4 * n_embd
    dropout: float = 0.0          # on embeddings and residual branches (training mode only)
    bias: bool = True             # biases in Linear layers
    tie_weights: bool = True      # the output head reuses the token embedding (GPT-2)
    activation: str = "gelu"      # "gelu", "gelu_tanh" or "relu"
    dtype: str = "float32"

    @property
    def mlp_hidden(self) -> int:
        return self.hidden or 4 * self.n_embd


def cross_entropy_over_tokens(logits: Tensor, targets: Any) -> Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) targets."""
    targets = targets.data if isinstance(targets, Tensor) else targets
    targets = array_module(logits.data).asarray(targets)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class Generates:
    """generate() for language models that define next_token_logits(idx) -> (B, V) array."""

    def generate(self, idx: Any, steps: int, temperature: float = 1.0,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        """Extend (B, T) token ids by `steps` sampled tokens (feeding at most block_size of
        context); returns the (B, T + steps) NumPy array. Runs in eval mode, no graph."""
        rng = rng if rng is not None else np.random.default_rng(0)
        idx = np.asarray(idx)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for _ in range(steps):
                    logits = self.next_token_logits(idx[:, -self.config.block_size:]) / temperature
                    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                    probs /= probs.sum(axis=1, keepdims=True)
                    choice = [rng.choice(probs.shape[1], p=row) for row in probs]
                    idx = np.concatenate([idx, np.asarray(choice, dtype=idx.dtype)[:, None]], axis=1)
        finally:
            self.train(was_training)
        return idx


class GPT(Generates, Module):
    """A decoder-only transformer language model (nanoGPT's shape).

    model(idx) -> logits (B, T, vocab_size) for (B, T) integer token ids (T <= block_size);
    model(idx, targets) -> the mean next-token cross-entropy (a scalar Tensor).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        object.__setattr__(self, "config", config)
        dtype = np.dtype(config.dtype)
        self.wte = Embedding(config.vocab_size, config.n_embd, dtype, std=0.02)
        self.wpe = Embedding(config.block_size, config.n_embd, dtype, std=0.02)
        self.drop = Dropout(config.dropout)
        self.blocks = Sequential(*[TransformerBlock(config.n_embd, config.n_head, config.mlp_hidden,
                                                    config.activation, config.bias, config.dropout, dtype)
                                   for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, dtype=dtype)
        self.lm_head = None if config.tie_weights else Linear(config.n_embd, config.vocab_size, bias=False,
                                                              dtype=dtype)

    def forward(self, idx: Any, targets: Any = None) -> Tensor:
        """Logits (B, T, vocab) for token ids (B, T); with targets, the mean loss instead."""
        idx = check_tokens(idx, self.config)
        x = self.drop(self.wte(idx) + self.wpe(np.arange(idx.shape[1])))
        x = self.ln_f(self.blocks(x))
        logits = F.linear(x, self.wte.weight) if self.lm_head is None else self.lm_head(x)
        return logits if targets is None else cross_entropy_over_tokens(logits, targets)

    def next_token_logits(self, idx: Any) -> Any:
        """The logits of the token after each sequence: a (B, vocab) array."""
        return self(idx).data[:, -1, :]


def check_tokens(idx: Any, config: GPTConfig) -> Any:
    """idx as a (B, T) integer array with T <= block_size, or a clear error."""
    idx = idx.data if isinstance(idx, Tensor) else idx
    idx = array_module(idx).asarray(idx)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise ValueError(f"GPT expects (batch, time) integer token ids, got shape {idx.shape} "
                         f"dtype {idx.dtype}")
    if idx.shape[1] > config.block_size:
        raise ValueError(f"sequence of length {idx.shape[1]} is longer than block_size "
                         f"{config.block_size}")
    return idx
