"""A NumPy-backed stand-in for CuPy, importable by any test (`tests/cupy_standin.py`).

`make_fake_cupy(tmp_dir)` returns a module to put in sys.modules["cupy"];
`install(monkeypatch, tmp_dir)` does that for one test and clears kernels.cuda's caches
before and after (the fixture `cp` of tests/test_kernels_emulated.py is built on it).

The stand-in hands the exact text kernels.cuda gives NVRTC to
g++ instead, with the CUDA keywords defined away, the two float16 `cvt` instructions
replaced by C++ `_Float16` conversions (also round to nearest even), and one wrapper per
template instance that runs every block and every thread of the grid in turn (the
kernels share nothing between threads, so any order gives the GPU's result). Arrays are
NumPy buffers aligned like CuPy's, passed by address. So kernels.cuda's real checks,
table, geometry and argument lists, and the kernels' indexing (chunks, the table walk,
head, vectors, tail), are tested against the NumPy twins; what this cannot show is
NVRTC's own acceptance of the source, the GPU's arithmetic and anything about speed.
"""
import ctypes
import hashlib
import shutil
import subprocess
import sys
import types

import numpy as np

from kernels import cuda

GXX = shutil.which("g++")

PRELUDE = r"""
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>
struct Dim3 { unsigned x = 0, y = 1, z = 1; };
static Dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
static inline float host_f16_to_float(unsigned short b) {
    _Float16 h; std::memcpy(&h, &b, 2); return (float)h;
}
static inline unsigned short host_float_to_f16(float f) {
    _Float16 h = (_Float16)f; unsigned short b; std::memcpy(&b, &h, 2); return b;
}
"""

RUNNER = r"""
template <typename... A, std::size_t... I>
static void call(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}
template <typename... A> static void launch(void (*k)(A...), unsigned grid, void** args) {
    gridDim.x = grid; blockDim.x = THREADS;
    for (unsigned b = 0; b < grid; ++b) {
        for (unsigned t = 0; t < (unsigned)THREADS; ++t) {
            blockIdx.x = b; threadIdx.x = t;
            call(k, args, std::index_sequence_for<A...>{});
        }
    }
}
template <typename... A> static int arity(void (*)(A...)) { return sizeof...(A); }
"""

CVT = {'asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));': "f = host_f16_to_float(h.bits);",
       'asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));': "h.bits = host_float_to_f16(f);"}
_LIBRARIES = {}                                   # source hash -> (library, {name: index})


def compile_for_host(code, names, tmp_dir):
    """g++ build of NVRTC-bound `code` with a run_<i>/arity_<i> pair per name expression."""
    key = hashlib.sha256((code + "\n".join(names)).encode()).hexdigest()[:16]
    if key not in _LIBRARIES:
        for instruction, replacement in CVT.items():
            assert code.count(instruction) == 1, f"the float16 conversion changed: {instruction}"
            code = code.replace(instruction, replacement)
        wrappers = [f'extern "C" void run_{i}(unsigned grid, void** args) {{ launch(&{name}, grid, args); }}\n'
                    f'extern "C" int arity_{i}() {{ return arity(&{name}); }}' for i, name in enumerate(names)]
        source = tmp_dir / f"{key}.cpp"
        source.write_text(PRELUDE + code + RUNNER + "\n".join(wrappers) + "\n")
        library = tmp_dir / f"{key}.so"
        result = subprocess.run([GXX, "-std=c++17", "-O1", "-fno-strict-aliasing", "-Wno-unknown-pragmas",
                                 "-shared", "-fPIC", "-o", str(library), str(source)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-5000:]
        _LIBRARIES[key] = (ctypes.CDLL(str(library)), {name: i for i, name in enumerate(names)})
    return _LIBRARIES[key]


class FakeArray:
    """A NumPy buffer posing as a cupy.ndarray (views share memory, as on the device)."""

    def __init__(self, host):
        self.host = host

    dtype = property(lambda self: self.host.dtype)
    shape = property(lambda self: self.host.shape)
    size = property(lambda self: self.host.size)
    ndim = property(lambda self: self.host.ndim)
    itemsize = property(lambda self: self.host.itemsize)
    strides = property(lambda self: self.host.strides)
    flags = property(lambda self: self.host.flags)
    data = property(lambda self: types.SimpleNamespace(ptr=self.host.ctypes.data, device_id=0))

    def __getitem__(self, key):
        return FakeArray(self.host[key])

    def __setitem__(self, key, value):
        self.host[key] = value

    def reshape(self, *shape):
        view = self.host.reshape(*shape)
        assert np.shares_memory(view, self.host) or not view.size
        return FakeArray(view)


def fake_asarray(x):
    """A copy in fresh memory aligned to 256 bytes, like a CuPy allocation."""
    if isinstance(x, FakeArray):
        return x
    x = np.asarray(x)
    raw = np.empty(x.nbytes + 256, np.uint8)
    start = (-raw.ctypes.data) % 256
    copy = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    copy[...] = x
    return FakeArray(copy)


class FakeKernel:
    def __init__(self, library, index):
        self.run = getattr(library, f"run_{index}")
        self.arity = getattr(library, f"arity_{index}")()

    def __call__(self, grid, block, args):
        assert block == (cuda.THREADS,) and len(grid) == 1 and grid[0] > 0
        assert len(args) == self.arity, f"{len(args)} arguments for a kernel of {self.arity}"
        values = []
        for arg in args:                          # what CuPy passes, by exact type
            if isinstance(arg, FakeArray):
                values.append(ctypes.c_void_p(arg.data.ptr))
            else:
                values.append({np.int32: ctypes.c_int32, np.int64: ctypes.c_int64,
                               np.float64: ctypes.c_double}[type(arg)](arg))
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        self.run(ctypes.c_uint(grid[0]), pointers)


def make_fake_cupy(tmp_dir):
    fake = types.ModuleType("cupy")

    class RawModule:
        def __init__(self, code, options, name_expressions):
            assert options == ("--std=c++17",)
            self.library, self.index = compile_for_host(code, name_expressions, tmp_dir)

        def get_function(self, name):
            return FakeKernel(self.library, self.index[name])

    class Device:
        def __init__(self, device=0):
            self.id = device
            self.attributes = {"MultiProcessorCount": 1, "MaxThreadsPerMultiProcessor": 2048}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    fake.ndarray, fake.RawModule, fake.asarray = FakeArray, RawModule, fake_asarray
    fake.asnumpy = lambda a: a.host.copy()
    fake.cuda = types.SimpleNamespace(Device=Device, runtime=types.SimpleNamespace(
        getDevice=lambda: 0, getDeviceCount=lambda: 1))
    return fake


def clear_caches():
    """Forget kernels.cuda's compiled modules, functions and tables (per-process caches)."""
    for cached in (cuda._module, cuda._function, cuda._max_blocks):
        getattr(cached, "cache_clear", lambda: None)()   # a test may have wrapped _function
    cuda._TABLES.clear()


def install(monkeypatch, tmp_dir):
    """Put a fresh stand-in in sys.modules["cupy"] for one test (monkeypatch undoes it);
    returns it. Call clear_caches() after the test too."""
    fake = make_fake_cupy(tmp_dir)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    clear_caches()
    return fake
