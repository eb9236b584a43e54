"""Distributed training on top of `collectives`: data parallelism (DistributedDataParallel,
DistributedSampler, checkpoints) and tensor parallelism."""
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .data import DistributedDataParallel
from .sampler import DistributedSampler
from .sequence import (
    gather_from_sequence_parallel_region,
    reduce_scatter_to_sequence_parallel_region,
    scatter_to_sequence_parallel_region,
)
from .tensor import (
                     ColumnParallelLinear,
                     ParallelMLP,
                     ProcessGrid,
                     RowParallelLinear,
                     copy_to_parallel_region,
                     gather_from_parallel_region,
                     reduce_from_parallel_region,
                     scatter_to_parallel_region,
                     unsharded_mlp,
)
from .transformer import (
    ParallelAttention,
    ParallelGPT,
    ParallelLayerNorm,
    ParallelTransformerBlock,
    VocabParallelEmbedding,
    gather_vocab,
    vocab_parallel_cross_entropy,
)

__all__ = ["DistributedDataParallel", "DistributedSampler", "save_checkpoint", "load_checkpoint",
           "read_checkpoint", "CheckpointError", "ColumnParallelLinear", "RowParallelLinear", "ParallelMLP",
           "ProcessGrid", "copy_to_parallel_region", "reduce_from_parallel_region",
           "gather_from_parallel_region", "scatter_to_parallel_region", "unsharded_mlp",
           "gather_from_sequence_parallel_region", "reduce_scatter_to_sequence_parallel_region",
           "scatter_to_sequence_parallel_region", "VocabParallelEmbedding", "vocab_parallel_cross_entropy",
           "gather_vocab", "ParallelLayerNorm", "ParallelAttention", "ParallelTransformerBlock", "ParallelGPT"]
