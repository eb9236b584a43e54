"""Distributed training on top of `collectives`: data parallelism (DistributedDataParallel,
DistributedSampler, checkpoints) and tensor parallelism."""
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .data import DistributedDataParallel
from .sampler import DistributedSampler
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

__all__ = ["DistributedDataParallel", "DistributedSampler", "save_checkpoint", "load_checkpoint",
           "read_checkpoint", "CheckpointError", "ColumnParallelLinear", "RowParallelLinear", "ParallelMLP",
           "ProcessGrid", "copy_to_parallel_region", "reduce_from_parallel_region",
           "gather_from_parallel_region", "scatter_to_parallel_region", "unsharded_mlp"]
