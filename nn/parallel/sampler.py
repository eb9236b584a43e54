"""DistributedSampler: each rank's disjoint share of every epoch's permutation."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collectives import Communicator


class DistributedSampler:
    """Splits each epoch's permutation of `num_samples` indices into one shard per rank.

    Rank r takes positions r, r+n, r+2n, ... of the permutation (n = comm.size), so when
    every rank draws local batches of b indices in order, the union of the ranks' k-th
    batches is exactly the k-th global batch of n*b indices: data-parallel training sees
    the same global batches as one process walking the permutation.
    Shards have equal length: with drop_last the tail that does not divide evenly is
    dropped, otherwise the permutation is padded by repeating its beginning.
    The permutation comes from numpy's Generator seeded by (seed, epoch): reproducible,
    the same on every rank. `state_dict()` records the epoch and how far this epoch went,
    so a resumed run continues with the next unseen batch.
    """

    def __init__(self, num_samples: int, comm: Communicator, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
        self.num_samples = int(num_samples)
        self.rank, self.world = comm.rank, comm.size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self.consumed = 0          # indices of this epoch already handed out on this rank
        per_rank = (self.num_samples // self.world if drop_last
                    else -(-self.num_samples // self.world))
        self.shard_size = per_rank
        self.total_size = per_rank * self.world

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of `epoch` (call at the start of every epoch); restarts it."""
        if epoch != self.epoch:
            self.consumed = 0
        self.epoch = epoch

    def permutation(self) -> np.ndarray:
        """This epoch's global order of indices, padded or cut to total_size."""
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
                 if self.shuffle else np.arange(self.num_samples))
        if self.total_size <= order.size:
            return order[:self.total_size]
        repeats = -(-self.total_size // order.size)
        return np.tile(order, repeats)[:self.total_size]

    def indices(self) -> np.ndarray:
        """This rank's shard for the current epoch (shard_size indices)."""
        return self.permutation()[self.rank::self.world]

    def __iter__(self):
        shard = self.indices()
        while self.consumed < shard.size:
            self.consumed += 1
            yield int(shard[self.consumed - 1])

    def __len__(self):
        return self.shard_size

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield the rest of this epoch's shard in batches of `batch_size` indices (the last
        may be shorter); the position advances as each batch is handed out."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        shard = self.indices()
        while self.consumed < shard.size:
            batch = shard[self.consumed:self.consumed + batch_size]
            self.consumed += batch.size
            yield batch

    def state_dict(self) -> dict:
        """Where this sampler stands: epoch, position in the epoch, and its settings."""
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed,
                "shuffle": self.shuffle, "num_samples": self.num_samples, "world": self.world,
                "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (from state_dict()); the settings must match."""
        for key in ("seed", "shuffle", "num_samples", "world", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r} but this sampler has "
                                 f"{getattr(self, key)!r}")
        self.epoch, self.consumed = state["epoch"], state["consumed"]
