"""Checkpoints that resume exactly: model, optimizer, sampler position and step in one file.

The file is a NumPy .npz archive (no pickle, so loading a foreign file cannot run code):
every array under a flat key ("model/0.weight", "optimizer/state/3/exp_avg", ...) plus a
JSON document "meta" with the format name, the step, the non-array parts of the
optimizer and sampler state, and the list of array keys. Rank 0 writes it to a temporary
file in the same folder and renames it into place, so a crash mid-write never leaves a
half-written checkpoint under the real name. A truncated or foreign file is a clear
error, and loading checks every key and shape before changing anything.
"""
import json
import os
import zipfile

import numpy as np

from kernels.arrays import to_numpy

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


def save_checkpoint(path, model, optimizer, sampler=None, step=0, comm=None, extra=None):
    """Write model, optimizer, sampler position and `step` to `path` (rank 0 only when a
    communicator is given or the model carries one; every rank then waits at a barrier so
    that no rank reads a checkpoint that is not there yet). Returns the path."""
    comm = comm if comm is not None else getattr(model, "comm", None)
    if comm is None or comm.rank == 0:
        arrays = {}
        meta = {"format": FORMAT, "step": int(step),
                "model": _flatten("model", dict(_module(model).state_dict()), arrays),
                "optimizer": _flatten("optimizer", optimizer.state_dict(), arrays) if optimizer else None,
                "sampler": sampler.state_dict() if sampler is not None else None,
                "extra": _flatten("extra", extra, arrays) if extra is not None else None}
        meta["arrays"] = sorted(arrays)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    if comm is not None:
        comm.barrier()
    return path


def read_checkpoint(path):
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
            "sampler": meta["sampler"], "extra": _unflatten(meta["extra"], arrays) if meta["extra"] else None}


def load_checkpoint(path, model, optimizer=None, sampler=None):
    """Restore model, optimizer and sampler from `path` (on every rank); returns the step.

    The model's load_state_dict checks keys and shapes and names what does not fit.
    """
    state = read_checkpoint(path)
    module = _module(model)
    module.load_state_dict(state["model"])
    if optimizer is not None:
        if state["optimizer"] is None:
            raise CheckpointError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    if sampler is not None:
        if state["sampler"] is None:
            raise CheckpointError(f"{path} holds no sampler state")
        sampler.load_state_dict(state["sampler"])
    return state["step"]
