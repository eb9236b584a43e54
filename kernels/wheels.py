"""The CUDA libraries the `gpu` extra installs as NVIDIA wheels (NVRTC, the runtime, NCCL),
found and loaded by path, so a machine with only a driver needs no CUDA toolkit and no
hand-set LD_LIBRARY_PATH.

CuPy opens libnvrtc.so.12 (and libnccl.so.2 for cupy.cuda.nccl) by name when it first
needs it, and the dynamic loader does not look inside site-packages. A library already
loaded under that name satisfies such a request, so `preload()` loads each wheel's
library by its full path (RTLD_GLOBAL) before the first kernel is compiled. Cost: a few
dlopen calls, once per process; nothing when the wheels are absent (a CUDA toolkit on
the loader path then serves CuPy as usual).
"""
import ctypes
import functools
import glob
import importlib.util
import os
from typing import Dict, Optional

# name -> (folder under site-packages/nvidia, file names loaded in order)
LIBRARIES = {
    "nvrtc": ("cuda_nvrtc", ("libnvrtc-builtins.so.12*", "libnvrtc.so.12")),
    "runtime": ("cuda_runtime", ("libcudart.so.12",)),
    "nccl": ("nccl", ("libnccl.so.2",)),
}


def _nvidia_roots():
    """The folders of the `nvidia` namespace package (where NVIDIA's wheels install)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def wheel_library(name: str) -> Optional[str]:
    """Full path of library `name` ("nvrtc", "runtime", "nccl") from its NVIDIA wheel, or
    None when that wheel is not installed."""
    folder, files = LIBRARIES[name]
    for root in _nvidia_roots():
        matches = sorted(glob.glob(os.path.join(root, folder, "lib", files[-1])))
        if matches:
            return matches[-1]
    return None


@functools.cache
def preload() -> Dict[str, Optional[str]]:
    """Load every wheel library found, by path, once; returns {name: path or None} (None:
    wheel absent). A library that fails to load is reported as the error text."""
    loaded = {}
    for name, (_, files) in LIBRARIES.items():
        target = wheel_library(name)
        loaded[name] = target
        if target is None:
            continue
        folder = os.path.dirname(target)
        try:
            for pattern in files:
                for path in sorted(glob.glob(os.path.join(folder, pattern))):
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            loaded[name] = f"failed to load: {error}"
    return loaded
