"""A NumPy-backed stand-in for CuPy that any test can import, and the machine it models.

`install(monkeypatch, tmp_dir, devices=1)` puts a fresh stand-in in sys.modules["cupy"]
(and "cupyx") for one test; `clear_caches()` forgets kernels.cuda's per-process caches.

What it models, because the GPU path's bugs depend on it:
- Devices: `devices` fake GPUs; the current device is per host thread (default 0, like
  CUDA). An array lives on the device current when it was made; any operation or kernel
  launch touching an array of another device raises ValueError, as CuPy/CUDA do.
- Streams, with deferred execution: every device operation (kernel launch, element
  write, arithmetic, host-to-device copy) is queued on the calling thread's current
  stream and runs only when that stream, or an event recorded on it, is synchronised, or
  when another stream waits on such an event. Each thread has its own default stream (as
  with CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1): two threads are ordered only if the code
  orders them. Device-to-host copies (get, asnumpy) synchronise the current stream only;
  a host-to-device copy (set) reads its host buffer when it runs, not when it is queued.
- Compiling: RawModule records its options with the ones CuPy appends
  (CUPY_APPENDED_OPTIONS) and models CuPy's disk cache, which CuPy skips when
  name_expressions are given; kernels run as C++ built with g++ (below), with an
  occupancy of BLOCKS_PER_SM blocks per SM reported through cupy.cuda.driver.
- The kernels: the exact text kernels.cuda gives NVRTC is built with g++ instead, with
  the CUDA keywords defined away and common.cuh's host branch (C++ in place of its
  inline PTX: `_Float16` conversions round to nearest even too), and one wrapper per kernel that
  runs every block and every thread of the grid in turn (the kernels share nothing
  between threads, so any order gives the GPU's result). The block and thread indices
  are per host thread: ranks are threads, and two of them may run kernels at once.
  Arrays are NumPy buffers aligned like CuPy's, passed by address.
What it cannot show: NVRTC's own acceptance of the source, the GPU's arithmetic (flush
to zero included: tests/test_kernels_build.py reads the PTX for that), real concurrency
between streams, and anything about speed. Data-dependent shapes (boolean masks) are
computed after synchronising the current stream.
"""
import ctypes
import hashlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
import types
import warnings

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from kernels import cuda

GXX = shutil.which("g++")

PRELUDE = r"""
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>
struct Dim3 { unsigned x = 0, y = 1, z = 1; };
static thread_local Dim3 threadIdx, blockIdx, blockDim, gridDim;   // ranks are threads
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
static thread_local long long path_elements[3];   // block_apply's paths: both vectors,
#define KERNELS_COUNT_PATH(path, elements) \
    do { if (threadIdx.x == 0) path_elements[path] += (elements); } while (0)
extern "C" void take_path_elements(long long* out) {   // vector stores only, scalars
    for (int i = 0; i < 3; ++i) { out[i] += path_elements[i]; path_elements[i] = 0; }
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

_LIBRARIES = {}                                   # source hash -> (library, {name: index})
_BUILD_LOCK = threading.Lock()
_COUNT_LOCK = threading.Lock()


def _build_dir(tmp_dir):
    """Where g++ builds are kept: a per-user cache shared across runs (keyed by the source
    hash, so never stale), else the test's temporary folder."""
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "collectives-cupy-standin")
    try:
        os.makedirs(cache, exist_ok=True)
        return cache
    except OSError:
        return str(tmp_dir)


def compile_for_host(code, names, tmp_dir):
    """g++ build of NVRTC-bound `code` with a run_<i>/arity_<i> pair per kernel name."""
    key = hashlib.sha256((code + "\n".join(names) + PRELUDE + RUNNER).encode()).hexdigest()[:16]
    with _BUILD_LOCK:                                 # ranks are threads: build once
        if key not in _LIBRARIES:
            _LIBRARIES[key] = _build(key, code, names, tmp_dir)
    return _LIBRARIES[key]


def _build(key, code, names, tmp_dir):
    """The (library, {name: index}) of `code`, from the build cache or built now."""
    folder = _build_dir(tmp_dir)
    library = os.path.join(folder, f"{key}.so")
    if not os.path.exists(library):
        assert "#if defined(__CUDA_ARCH__)" in code, "the host branch of common.cuh is gone"
        wrappers = [f'extern "C" void run_{i}(unsigned grid, void** args) {{ launch(&{name}, grid, args); }}\n'
                    f'extern "C" int arity_{i}() {{ return arity(&{name}); }}' for i, name in enumerate(names)]
        source = os.path.join(folder, f"{key}.{os.getpid()}.cpp")
        with open(source, "w") as handle:
            handle.write(PRELUDE + code + RUNNER + "\n".join(wrappers) + "\n")
        partial = f"{library}.{os.getpid()}"
        result = subprocess.run([GXX, "-std=c++17", "-O1", "-fno-strict-aliasing", "-Wno-unknown-pragmas",
                                 "-shared", "-fPIC", "-o", partial, source],
                                capture_output=True, text=True, timeout=600)
        os.remove(source)
        assert result.returncode == 0, result.stderr[-5000:]
        os.replace(partial, library)                  # atomic: concurrent runs never see half
    return ctypes.CDLL(library), {name: i for i, name in enumerate(names)}


# ---- the machine: devices, per-thread current device and stream -------------------------
CUPY_APPENDED_OPTIONS = ("-ftz=true",)   # CuPy 13's _compile_with_cache_cuda adds it last
BLOCKS_PER_SM = 3                        # the occupancy the stand-in reports for every kernel
SMS = 2                                  # multiprocessors per fake GPU


class Stream:
    """A queue of device operations, run in order when synchronised (see module docstring)."""

    _ptrs = itertools.count(0x1000)

    def __init__(self, null=False, non_blocking=False, ptr=None):
        self.device_id = _WORLD.device()
        self.ptr = next(self._ptrs)
        self._ops, self._done = [], 0
        self._lock = threading.RLock()
        self._previous = []

    def enqueue(self, op):
        with self._lock:
            self._ops.append(op)

    def queued(self):
        """How many operations were ever queued (an event's position)."""
        with self._lock:
            return len(self._ops)

    def run_until(self, position):
        with self._lock:
            while self._done < position:
                op = self._ops[self._done]
                self._done += 1
                op()

    def synchronize(self):
        self.run_until(self.queued())

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        # On this stream the order is already implied: nothing runs. On another, running
        # the event's prefix now is one valid schedule: it precedes all that this stream
        # runs later, which is what cudaStreamWaitEvent promises.
        if event.stream is not self:
            event.synchronize()

    @property
    def done(self):
        with self._lock:
            return self._done == len(self._ops)

    def use(self):
        _WORLD.set_stream(self)
        return self

    def __enter__(self):
        self._previous.append(_WORLD.stream())
        _WORLD.set_stream(self)
        return self

    def __exit__(self, *exc):
        _WORLD.set_stream(self._previous.pop())
        return False


class Event:
    """A position in a stream's queue."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.stream, self.position = None, 0

    def record(self, stream=None):
        self.stream = stream or _WORLD.stream()
        self.position = self.stream.queued()
        return self

    def synchronize(self):
        if self.stream is not None:
            self.stream.run_until(self.position)

    @property
    def done(self):
        return self.stream is None or self.stream._done >= self.position


class _World:
    """The fake machine: its devices and every host thread's current device and streams."""

    def __init__(self, devices=1):
        self.devices = devices
        self.local = threading.local()
        self.compiles = []            # (options, name_expressions) of every NVRTC compile
        self.disk_cache = set()       # keys of the modules CuPy's disk cache holds
        self.launches = []            # (kernel name, grid) of every launch
        self.functions = {}           # CUfunction handle -> the device it was loaded on
        self.path_elements = (ctypes.c_longlong * 3)()   # elements moved by: both sides as
        #                                                  vectors, vector stores only, scalars

    def device(self):
        return getattr(self.local, "device", 0)

    def set_device(self, device):
        if not 0 <= device < self.devices:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device}")
        self.local.device = device

    def _streams(self):
        if not hasattr(self.local, "streams"):
            self.local.streams = {}
        return self.local.streams

    def stream(self):
        """This thread's current stream on its current device (its own default stream)."""
        streams, device = self._streams(), self.device()
        if device not in streams:
            streams[device] = Stream()
        return streams[device]

    def set_stream(self, stream):
        self._streams()[stream.device_id] = stream


_WORLD = _World()


def _check_here(arrays):
    current = _WORLD.device()
    for array in arrays:
        if array.device_id != current:
            raise ValueError(f"Array device must be same as the current device: array device = "
                             f"{array.device_id} while current = {current}")


def _enqueue(op, arrays=()):
    """Queue `op` on the current stream after checking every array is on the current device."""
    _check_here(arrays)
    _WORLD.stream().enqueue(op)


# ---- arrays ------------------------------------------------------------------------------
def _aligned(shape, dtype):
    """Fresh host memory aligned to 256 bytes, like a CuPy allocation."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(nbytes + 256, np.uint8)
    start = (-raw.ctypes.data) % 256
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _fakes(obj, found):
    """Collect the FakeArrays in nested args (tuples, lists, dicts)."""
    if isinstance(obj, FakeArray):
        found.append(obj)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _fakes(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _fakes(item, found)
    return found


def _map(obj, fn):
    if isinstance(obj, FakeArray):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map(item, fn) for item in obj)
    if isinstance(obj, dict):
        return {key: _map(item, fn) for key, item in obj.items()}
    return obj


def _refuse_host_arrays(args):
    for arg in args:
        if isinstance(arg, np.ndarray) and arg.ndim:
            raise TypeError(f"Unsupported type {type(arg)}: a numpy.ndarray mixed with cupy.ndarray")


def _deferred(compute, args, kwargs):
    """compute(*args, **kwargs) as CuPy would run it: views of an input come back at once
    (no data is read), new arrays are allocated now and filled when the stream runs, in-place
    work (a result of None) is queued, and scalars synchronise the current stream first."""
    arrays = _fakes((args, kwargs), [])
    _check_here(arrays)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dummies = {id(a): np.zeros_like(a.host) for a in arrays}
        shape = compute(*_map(args, lambda a: dummies[id(a)]), **_map(kwargs, lambda a: dummies[id(a)]))

    def real():
        return compute(*_map(args, lambda a: a.host), **_map(kwargs, lambda a: a.host))
    outputs = shape if isinstance(shape, (tuple, list)) else [shape]
    if shape is None:
        _enqueue(real, arrays)
        return None
    if all(isinstance(o, np.ndarray) for o in outputs):
        if all(any(np.shares_memory(o, d) for d in dummies.values()) or not o.size for o in outputs):
            views = real()                             # views: no data is read
            device = arrays[0].device_id if arrays else _WORLD.device()
            return _map_result(views, lambda v: FakeArray(v, device))
        results = [FakeArray(_aligned(o.shape, o.dtype)) for o in outputs]

        def fill():
            values = real()
            for result, value in zip(results, values if isinstance(shape, (tuple, list)) else [values]):
                result.host[...] = value
        _enqueue(fill, arrays)
        return type(shape)(results) if isinstance(shape, (tuple, list)) else results[0]
    _WORLD.stream().synchronize()                     # a scalar: the host waits for it
    return real()


def _map_result(value, wrap):
    if isinstance(value, (tuple, list)):
        return type(value)(wrap(v) for v in value)
    return wrap(value)


class FakeArray(NDArrayOperatorsMixin):
    """A NumPy buffer posing as a cupy.ndarray on one fake device (views share memory)."""

    __module__ = "cupy"              # how the engine recognises CuPy arrays
    __array_priority__ = 100

    def __init__(self, host, device=None):
        self.host = host
        self.device_id = _WORLD.device() if device is None else device

    dtype = property(lambda self: self.host.dtype)
    shape = property(lambda self: self.host.shape)
    size = property(lambda self: self.host.size)
    ndim = property(lambda self: self.host.ndim)
    itemsize = property(lambda self: self.host.itemsize)
    nbytes = property(lambda self: self.host.nbytes)
    strides = property(lambda self: self.host.strides)
    flags = property(lambda self: self.host.flags)
    data = property(lambda self: types.SimpleNamespace(ptr=self.host.ctypes.data, device_id=self.device_id))
    device = property(lambda self: Device(self.device_id))

    @property
    def __cuda_array_interface__(self):
        return {"data": (self.host.ctypes.data, False), "shape": self.shape,
                "typestr": self.dtype.str, "version": 3, "strides": None}

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host_arrays(inputs)
        call = getattr(ufunc, method)
        out = kwargs.get("out")
        if out is not None:
            outs = out if isinstance(out, tuple) else (out,)
            _enqueue(lambda: call(*_map(inputs, lambda a: a.host), **_map(kwargs, lambda a: a.host)),
                     _fakes((inputs, outs), []))
            return outs[0] if len(outs) == 1 else outs
        return _deferred(call, inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        if "out" in kwargs and kwargs["out"] is not None:
            _enqueue(lambda: func(*_map(args, lambda a: a.host), **_map(kwargs, lambda a: a.host)),
                     _fakes((args, kwargs), []))
            return kwargs["out"]
        return _deferred(func, args, kwargs)

    def __getitem__(self, key):
        if _fakes(key, []) or (isinstance(key, np.ndarray) and key.dtype == bool):
            _WORLD.stream().synchronize()             # data-dependent: read the index now
            index = _map(key, lambda a: a.host)
            return FakeArray(np.ascontiguousarray(self.host[index]), self.device_id)
        return _deferred(lambda h: h[key], (self,), {})

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray):
            value = value.copy()                      # CuPy copies a host value up first
        index = _map(key, lambda a: a.host)
        source = value.host if isinstance(value, FakeArray) else value

        def write():
            self.host[index] = source
        _enqueue(write, _fakes((self, key, value), []))

    def __getattr__(self, name):
        if name in ("host", "__array_interface__", "__array_struct__"):
            raise AttributeError(name)       # CuPy arrays have neither: NumPy cannot read them
        attribute = getattr(self.host, name)
        if callable(attribute):
            return lambda *args, **kwargs: _deferred(
                lambda h, *a, **k: getattr(h, name)(*a, **k), (self,) + args, kwargs)
        return _deferred(lambda h: getattr(h, name), (self,), {})

    def __len__(self):
        return len(self.host)

    def __bool__(self):
        return bool(self.get())

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __repr__(self):
        return f"fake_cupy_array({self.get()!r}, device={self.device_id})"

    def get(self, stream=None, order="C", out=None, blocking=True):
        """Device to host: waits for this thread's current stream on the array's device
        (only), then copies."""
        with Device(self.device_id):
            (stream or _WORLD.stream()).synchronize()
        if out is None:
            return self.host.copy()
        out[...] = self.host
        return out

    def set(self, arr, stream=None):
        """Host to device, queued: the host buffer is read when the copy runs."""
        with Device(self.device_id):
            (stream or _WORLD.stream()).enqueue(lambda: self.host.__setitem__(Ellipsis, arr.reshape(self.shape)))

    def reshape(self, *shape, order="C"):
        return _deferred(lambda h: h.reshape(*shape), (self,), {})


def fake_asarray(x, dtype=None):
    """x on the current device: a FakeArray as is (or cast), a host array copied up now."""
    if isinstance(x, FakeArray):
        return x if dtype is None or np.dtype(dtype) == x.dtype else x.astype(dtype)
    x = np.asarray(x, dtype=dtype)
    copy = _aligned(x.shape, x.dtype)
    copy[...] = x
    return FakeArray(copy)


def _adopt(value):
    """A NumPy result of a creation function as a fresh array on the current device."""
    if isinstance(value, np.ndarray):
        return fake_asarray(value)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], np.ndarray):
        return type(value)(fake_asarray(v) for v in value)
    return value


def _module_attribute(name):
    """cupy.<name> for anything not defined below: NumPy's, on the current device."""
    target = getattr(np, name)
    if not callable(target) or isinstance(target, type):
        return target

    def call(*args, **kwargs):
        if _fakes((args, kwargs), []):
            return target(*args, **kwargs)            # dispatches to FakeArray
        return _adopt(target(*args, **kwargs))
    return call


def _device_copy(a, dtype=None):
    """A new array on a's device holding a (cast to dtype), C-contiguous, filled when the
    stream runs the copy."""
    _check_here([a])
    result = FakeArray(_aligned(a.shape, np.dtype(dtype or a.dtype)), a.device_id)
    _enqueue(lambda: result.host.__setitem__(Ellipsis, a.host), [a, result])
    return result


def fake_array(obj, dtype=None, copy=True):
    """cupy.array: a device array is copied on its device (queued); host data is copied up now."""
    if not isinstance(obj, FakeArray):
        return fake_asarray(np.array(obj, dtype=dtype))
    same = dtype is None or np.dtype(dtype) == obj.dtype
    return obj if copy is False and same else _device_copy(obj, dtype)


def fake_ascontiguousarray(a, dtype=None):
    """cupy.ascontiguousarray: a itself when already C-contiguous (and of that dtype), else a
    queued copy on its device; host data is copied up now."""
    if not isinstance(a, FakeArray):
        return fake_asarray(np.ascontiguousarray(a, dtype=dtype))
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return _device_copy(a, dtype)


class Device:
    """cupy.cuda.Device: `with Device(n):` and use() set this thread's current device."""

    def __init__(self, device=None):
        self.id = _WORLD.device() if device is None else int(device)
        self.attributes = {"MultiProcessorCount": SMS, "MaxThreadsPerMultiProcessor": 2048}
        self.compute_capability = "90"
        self.pci_bus_id = f"0000:{0x10 + self.id:02X}:00.0"
        self._previous = []

    def use(self):
        _WORLD.set_device(self.id)

    def synchronize(self):
        for stream in list(_WORLD._streams().values()):
            if stream.device_id == self.id:
                stream.synchronize()

    def __enter__(self):
        self._previous.append(_WORLD.device())
        _WORLD.set_device(self.id)
        return self

    def __exit__(self, *exc):
        _WORLD.set_device(self._previous.pop())
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


# ---- compiling and launching ---------------------------------------------------------------
class FakeKernel:
    """cupy.RawKernel as RawModule.get_function returns it: callable, with no pointer of its
    own; its `kernel` property is the function loaded on the CURRENT device (CuPy keeps one
    cupy.cuda.function.Function per device), whose `ptr` is the CUfunction handle the
    driver API takes."""
    _ptrs = itertools.count(0x9000)

    def __init__(self, library, index, name):
        self.name = name
        self.take_path_elements = library.take_path_elements
        self.run = getattr(library, f"run_{index}")
        self.arity = getattr(library, f"arity_{index}")()
        self._functions = {}                      # device -> Function

    @property
    def kernel(self):
        device = _WORLD.device()
        if device not in self._functions:
            self._functions[device] = types.SimpleNamespace(ptr=next(self._ptrs))
            _WORLD.functions[self._functions[device].ptr] = device
        return self._functions[device]

    def __call__(self, grid, block, args, stream=None, shared_mem=0):
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

        def launch():                             # holds the arrays until the kernel ran,
            self.run(ctypes.c_uint(grid[0]), pointers)     # as CuPy's memory pool does
            with _COUNT_LOCK:                     # this thread's counts into the world's
                self.take_path_elements(_WORLD.path_elements)
            del keep[:]
        keep = [args, values]
        _check_here([a for a in args if isinstance(a, FakeArray)])
        _WORLD.launches.append((self.name, tuple(grid)))
        (stream or _WORLD.stream()).enqueue(launch)


PLAIN_KERNEL = r'extern "C" __global__ void (?!__launch_bounds__)(\w+)\('   # e.g. busy_wait


def _make_raw_module(tmp_dir):
    class RawModule:
        """cupy.RawModule: records CuPy's full option list and its disk-cache behaviour;
        builds the code with g++ when a kernel is first asked for."""

        def __init__(self, code, options=(), name_expressions=None, **unused):
            self.code, self.names = code, name_expressions
            self.options = tuple(options) + CUPY_APPENDED_OPTIONS
            key = hashlib.sha256((code + repr(self.options)).encode()).hexdigest()
            self.from_disk = name_expressions is None and key in _WORLD.disk_cache
            if not self.from_disk:
                _WORLD.compiles.append((self.options, name_expressions))
            if name_expressions is None:          # CuPy caches only modules without them
                _WORLD.disk_cache.add(key)
            self._built = None

        def get_function(self, name):
            if self._built is None:
                names = self.names or (re.findall(r"^\w+_ENTRY\((\w+),", self.code, flags=re.M)
                                       + re.findall(PLAIN_KERNEL, self.code))
                self._built = compile_for_host(self.code, list(names), tmp_dir)
            library, index = self._built
            return FakeKernel(library, index[name], name)
    return RawModule


def _occupancy(func, block, shared):
    """cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor: takes a CUfunction handle
    (an int, as the real one's intptr_t argument), not a RawKernel."""
    if not isinstance(func, int):
        raise TypeError(f"an integer is required (CUfunction handle), got {type(func).__name__}")
    assert func in _WORLD.functions, f"{func:#x} is not a loaded kernel's handle"
    if _WORLD.functions[func] != _WORLD.device():     # the driver asks the current context
        raise RuntimeError(f"CUDA_ERROR_INVALID_HANDLE: function {func:#x} was loaded on GPU "
                           f"{_WORLD.functions[func]}, the current device is GPU {_WORLD.device()}")
    return BLOCKS_PER_SM


def make_fake_cupy(tmp_dir, devices=1):
    """A fresh stand-in module (and a fresh machine with `devices` GPUs)."""
    global _WORLD
    _WORLD = _World(devices)
    fake = types.ModuleType("cupy")
    fake.__getattr__ = _module_attribute
    fake.__version__ = "13.6.0 (stand-in)"
    fake.ndarray, fake.RawModule, fake.asarray = FakeArray, _make_raw_module(tmp_dir), fake_asarray
    fake.asnumpy = lambda a, stream=None, out=None: a.get(stream=stream, out=out)
    fake.array, fake.ascontiguousarray = fake_array, fake_ascontiguousarray
    fake.get_array_module = lambda *arrays: fake if _fakes(arrays, []) else np
    fake.world = _WORLD
    runtime = types.SimpleNamespace(
        getDevice=_WORLD.device, setDevice=_WORLD.set_device, getDeviceCount=lambda: _WORLD.devices,
        getDeviceProperties=lambda d: {"name": b"Stand-in GPU", "pciBusID": 0x10 + d, "multiProcessorCount": SMS},
        runtimeGetVersion=lambda: 12080, driverGetVersion=lambda: 12080)
    driver = types.SimpleNamespace(occupancyMaxActiveBlocksPerMultiprocessor=_occupancy)
    fake.cuda = types.SimpleNamespace(
        Device=Device, Stream=Stream, Event=Event, runtime=runtime, driver=driver,
        get_current_stream=_WORLD.stream, get_elapsed_time=_elapsed_ms)
    return fake


def _elapsed_ms(start, stop):
    """cupy.cuda.get_elapsed_time: both events recorded and `stop` reached, else CUDA's
    error; the stand-in has no clock, so 0.0 ms."""
    if start.stream is None or stop.stream is None:
        raise RuntimeError("cudaErrorInvalidResourceHandle: an event was never recorded")
    if not stop.done:
        raise RuntimeError("cudaErrorNotReady: the stop event has not completed")
    return 0.0


def make_fake_cupyx():
    """cupyx: pinned host memory and scatter_add."""
    fake = types.ModuleType("cupyx")
    fake.empty_pinned = lambda shape, dtype=np.float64: _aligned(shape, dtype)
    fake.zeros_pinned = lambda shape, dtype=np.float64: _aligned(shape, dtype)
    fake.scatter_add = lambda a, index, b: _enqueue(
        lambda: np.add.at(a.host, _map(index, lambda i: i.host), b.host if isinstance(b, FakeArray) else b),
        _fakes((a, index, b), []))
    return fake


def clear_caches():
    """Forget kernels.cuda's compiled modules, functions and tables (per-process caches)."""
    for name in ("_module", "_kernel", "_function", "_max_blocks"):
        getattr(getattr(cuda, name, None), "cache_clear", lambda: None)()
    cuda._TABLES.clear()


def install(monkeypatch, tmp_dir, devices=1):
    """Put a fresh stand-in in sys.modules["cupy"] (and "cupyx") for one test (monkeypatch
    undoes it); returns it. Call clear_caches() after the test too."""
    fake = make_fake_cupy(tmp_dir, devices)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupyx", make_fake_cupyx())
    clear_caches()
    return fake
