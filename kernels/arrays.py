"""Which library holds an array (NumPy or CuPy), and host copies: the one home of both rules
for kernels, collectives, nn and bench.

CuPy is never imported here. An object can only be a CuPy array once CuPy is imported, so
the test looks in sys.modules: a process without CuPy pays nothing, and a NumPy-backed
stand-in placed in sys.modules["cupy"] (as the tests do) is recognised exactly like CuPy.
"""
import sys
from types import ModuleType
from typing import Any, Optional

import numpy as np

# A NumPy or CuPy array. CuPy is optional, so there is no static type that names both.
Array = Any


def array_module(x: Any) -> Optional[ModuleType]:
    """numpy for a NumPy array, cupy for a CuPy array, None for anything else (numbers,
    lists, other libraries' tensors). Callers that accept plain data choose their own
    default, e.g. `array_module(x) or numpy`. Cost: one or two isinstance checks."""
    if isinstance(x, np.ndarray):
        return np
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return None


def to_numpy(x: Any) -> np.ndarray:
    """x as a NumPy array: x itself when it is one (no copy), a host copy of a CuPy array
    (x.get(), which waits for the device), else numpy.asarray(x)."""
    if isinstance(x, np.ndarray):
        return x
    if array_module(x) is not None:
        return x.get()
    return np.asarray(x)
