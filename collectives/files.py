"""Writing files so that a reader never sees half of one: the one home of atomic writes
(tuning files, flight records, checkpoints)."""
from __future__ import annotations

import glob
import os
from typing import IO, Callable


def write_atomically(path: str, write: Callable[[IO], None], binary: bool = False) -> str:
    """Call write(handle) on a hidden temporary file next to `path`, flush it to disk and
    rename it into place (atomic on POSIX); returns path. If write raises, `path` is left as
    it was. Creates the folder; first removes the temporaries that writers killed mid-write
    left behind for the same path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, f".{os.path.basename(path)}.")
    temporary = f"{prefix}{os.getpid()}.tmp"
    for stale in glob.glob(glob.escape(prefix) + "*.tmp"):
        if stale != temporary:
            try:
                os.remove(stale)
            except FileNotFoundError:
                pass
    try:
        with open(temporary, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path
