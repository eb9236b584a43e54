"""Checkpoints that resume exactly: model, optimizer, sampler position and step in one file.

The file is a NumPy .npz archive (no pickle, so loading a foreign file cannot run code):
every array under a flat key ("model/0.weight", "optimizer/state/3/exp_avg", ...) plus a
JSON document "meta" with the format name, the step, the non-array parts of the
optimizer and sampler state, and the list of array keys. Rank 0 writes it to a temporary
file in the same folder and renames it into place, so a crash mid-write never leaves a
half-written checkpoint under the real name, and the next save removes the temporary
a killed save left. A truncated or foreign file is a clear error, and loading checks
everything (model keys and shapes, the optimizer's kind, groups and state shapes, the
sampler's settings) before changing anything.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING

import numpy as np

from collectives.files import write_atomically
from kernels.arrays import to_numpy

if TYPE_CHECKING:
    from collectives import Communicator

    from ..modules import Module
    from ..optim import Optimizer
    from .sampler import DistributedSampler

FORMAT = "collectives-checkpoint-v1"


class CheckpointError(ValueError):
    """The file is not a complete checkpoint of this format, or does not fit the model."""


def _flatten(prefix, value, arrays):
    """Arrays in nested dicts/lists go to `arrays` under "prefix/key"; the rest is returned
    as JSON-able data with {"__array__": key} markers."""
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _flatten(f"{prefix}/{k}", v, arrays) for k, v in value.items()}
        # JSON objects only have string keys: keep int keys (optimizer state) as pairs
        return {"__items__": [[k.item() if isinstance(k, np.generic) else k,
                               _flatten(f"{prefix}/{k}", v, arrays)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(f"{prefix}/{i}", v, arrays) for i, v in enumerate(value)]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arrays[prefix] = to_numpy(value)
        return {"__array__": prefix}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unflatten(value, arrays):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        if set(value) == {"__items__"}:
            return {k: _unflatten(v, arrays) for k, v in value["__items__"]}
        return {k: _unflatten(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unflatten(v, arrays) for v in value]
    return value


def _module(model):
    return getattr(model, "module", model)      # a DistributedDataParallel wraps its module


def save_checkpoint(path: str | os.PathLike, model: Module, optimizer: Optimizer | None,
                    sampler: DistributedSampler | None = None, step: int = 0, comm: Communicator | None = None,
                    extra: dict | None = None) -> str | os.PathLike:
    """Write model, optimizer, sampler position and `step` to `path` (rank 0 only when a
    communicator is given or the model carries one; every rank then waits at a barrier so
    that no rank reads a checkpoint that is not there yet). Returns the path."""
    comm = comm if comm is not None else getattr(model, "comm", None)
    if comm is None or comm.rank == 0:
        arrays = {}
        meta = {"format": FORMAT, "step": int(step),
                "model": _flatten("model", dict(_module(model).state_dict()), arrays),
                "optimizer": _flatten("optimizer", optimizer.state_dict(), arrays) if optimizer else None,
                "optimizer_type": type(optimizer).__name__ if optimizer else None,
                "sampler": sampler.state_dict() if sampler is not None else None,
                "extra": _flatten("extra", extra, arrays) if extra is not None else None}
        meta["arrays"] = sorted(arrays)
        _write_atomically(path, meta, arrays)
    if comm is not None:
        comm.barrier()
    return path


def _write_atomically(path, meta, arrays):
    """Write the archive so that a reader never sees half of it (collectives.files)."""
    write_atomically(path, lambda handle: np.savez(
        handle, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays), binary=True)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint at `path` as {"step", "model", "optimizer", "sampler", "extra"}
    (arrays as NumPy); CheckpointError if it is truncated, foreign or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "meta" not in archive.files:
                raise CheckpointError(f"{path} is not a {FORMAT} file (no 'meta' entry)")
            meta = json.loads(archive["meta"].tobytes().decode())
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
            missing = [key for key in meta["arrays"] if key not in archive.files]
            if missing:
                raise CheckpointError(f"{path} is incomplete: arrays {missing[:5]} are missing")
            arrays = {key: archive[key] for key in meta["arrays"]}
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise CheckpointError(f"{path} is not a readable {FORMAT} file (truncated or foreign?): "
                              f"{type(error).__name__}: {error}") from error
    return {"step": meta["step"], "model": _unflatten(meta["model"], arrays),
            "optimizer": _unflatten(meta["optimizer"], arrays) if meta["optimizer"] else None,
            "optimizer_type": meta.get("optimizer_type"),
            "sampler": meta["sampler"], "extra": _unflatten(meta["extra"], arrays) if meta["extra"] else None}


def load_checkpoint(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None,
                    sampler: DistributedSampler | None = None) -> int:
    """Restore model, optimizer and sampler from `path` (on every rank); returns the step.

    Everything is checked first (model keys and shapes, the optimizer's kind, parameter
    groups, hyper-parameter names and state shapes, the sampler's settings such as its
    world size); a CheckpointError names what does not fit, and nothing has changed then.
    """
    state = read_checkpoint(path)
    module = _module(model)
    _check_model(path, state["model"], module.state_dict())
    if optimizer is not None:
        _check_optimizer(path, state, optimizer)
    if sampler is not None:
        _check_sampler(path, state["sampler"], sampler.state_dict())
    module.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if sampler is not None:
        sampler.load_state_dict(state["sampler"])
    return state["step"]


def _shape(value):
    return tuple(value.shape) if hasattr(value, "shape") else None


def _check_model(path, saved, own):
    missing = sorted(k for k in own if k not in saved)
    unexpected = sorted(k for k in saved if k not in own)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing keys {missing[:5]}, "
                              f"unexpected keys {unexpected[:5]}")
    wrong = [f"{k}: checkpoint {_shape(saved[k])} vs model {_shape(own[k])}"
             for k in own if _shape(saved[k]) != _shape(own[k])]
    if wrong:
        raise CheckpointError(f"{path} does not fit the model: shapes differ for " + "; ".join(wrong[:5]))


def _check_optimizer(path, state, optimizer):
    """The saved optimizer state is of this optimizer's kind and layout."""
    saved, own, kind = state["optimizer"], optimizer.state_dict(), type(optimizer).__name__
    if saved is None:
        raise CheckpointError(f"{path} holds no optimizer state")
    if state["optimizer_type"] not in (None, kind):
        raise CheckpointError(f"{path} holds {state['optimizer_type']} state, but the optimizer is a "
                              f"{kind}: load it into a {state['optimizer_type']}, or pass optimizer=None")
    groups = [len(g["params"]) for g in saved["param_groups"]]
    if groups != [len(g["params"]) for g in own["param_groups"]]:
        raise CheckpointError(f"{path} holds parameter groups of {groups} parameters, the optimizer has "
                              f"{[len(g['params']) for g in own['param_groups']]}")
    for number, (old, new) in enumerate(zip(saved["param_groups"], own["param_groups"])):
        if set(old) != set(new):
            raise CheckpointError(f"{path}: parameter group {number} has hyper-parameters {sorted(old)}, "
                                  f"the {kind} has {sorted(new)} (another kind of optimizer?)")
    shapes = [p.shape for g in getattr(optimizer, "param_groups", ()) for p in g.get("params", ())
              if hasattr(p, "shape")]
    for index, entries in saved["state"].items():
        index = int(index)
        if shapes and not 0 <= index < len(shapes):
            raise CheckpointError(f"{path} holds optimizer state for parameter {index}, the optimizer has "
                                  f"{len(shapes)}")
        for key, value in entries.items():
            if shapes and _shape(value) not in (None, (), tuple(shapes[index])):
                raise CheckpointError(f"{path}: optimizer state {index}.{key} has shape {_shape(value)}, "
                                      f"the parameter has {tuple(shapes[index])}")


def _check_sampler(path, saved, own):
    if saved is None:
        raise CheckpointError(f"{path} holds no sampler state")
    differ = {k: (saved.get(k), v) for k, v in own.items() if k not in ("epoch", "consumed")
              and saved.get(k) != v}
    if differ:
        raise CheckpointError(f"{path} was saved by a sampler with other settings (checkpoint vs this "
                              "sampler): " + ", ".join(f"{k}={a!r} vs {b!r}" for k, (a, b) in differ.items()))
