"""Distributed training on top of `collectives`: data parallelism (DistributedDataParallel,
DistributedSampler, checkpoints) and tensor parallelism."""
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .data import DistributedDataParallel
from .sampler import DistributedSampler

__all__ = ["DistributedDataParallel", "DistributedSampler", "save_checkpoint", "load_checkpoint",
           "read_checkpoint", "CheckpointError"]
