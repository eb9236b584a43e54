"""The random numbers behind initialisation and dropout, seedable for reproducible runs.

Each thread has its own generator (in-process ranks are threads, and must not race on
one); a plain program has one thread, so `manual_seed` seeds "the" generator.
"""
from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def manual_seed(seed: int) -> None:
    """Seed this thread's generator: the same seed gives the same initial weights and masks."""
    _local.generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """This thread's numpy Generator (seeded with 0 until manual_seed is called)."""
    if getattr(_local, "generator", None) is None:
        _local.generator = np.random.default_rng(0)
    return _local.generator
