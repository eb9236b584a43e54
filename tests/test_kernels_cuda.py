"""The CUDA kernels against their NumPy twins, bit for bit, on a GPU (skipped otherwise).

Every test takes the array module as the fixture `cp`: real CuPy here; the same tests run
in tests/test_kernels_emulated.py on a stand-in that executes the kernels' C++ on the CPU.
Data is built with NumPy and copied up, so device and host start from identical bits;
every output region is poisoned first and compared whole, neighbours included, so an
unwritten or stray element fails. Views at odd element offsets exercise the head/tail
and scalar paths next to the 16-byte vector path.
"""
import sys

import numpy as np
import pytest

import kernels
from kernels import cuda, reference

DTYPES = ["float16", "float32", "float64", "int32", "int64"]
FLOATS = ["float16", "float32", "float64"]


@pytest.fixture
def cp():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install '.[gpu]')")
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception:                                   # CuPy without a driver or a device
        devices = 0
    if not devices:
        pytest.skip("no CUDA device")
    return cupy


def random(n, dtype, rng, nans=False):
    """n values of dtype: normal * 20, with +0.0/-0.0, subnormals of both signs (a GPU that
    flushes them to zero fails) and NaNs of two payloads sprinkled in."""
    values = (rng.standard_normal(n) * 20).astype(dtype)
    if np.dtype(dtype).kind == "f" and n:
        values[rng.integers(0, n, n // 10 + 1)] = 0.0
        values[rng.integers(0, n, n // 10 + 1)] = -0.0
        tiny = rng.integers(-500, 500, n // 10 + 1) * np.finfo(dtype).smallest_subnormal
        values[rng.integers(0, n, n // 10 + 1)] = tiny.astype(dtype)
        if nans:
            values[rng.integers(0, n, n // 20 + 1)] = np.nan
            bits = values.view(f"u{values.itemsize}")
            odd = rng.integers(0, n, n // 40 + 1)
            values[odd] = np.nan
            bits[odd] |= 1                              # a second NaN payload
    return values


def poison(n, dtype):
    return np.full(n, np.nan if np.dtype(dtype).kind == "f" else -12345, dtype)


def same_bits(cp, device, host):
    return cp.asnumpy(device).tobytes() == np.ascontiguousarray(host).tobytes()


# ---- reduce_into ---------------------------------------------------------------------
OFFSETS = {"aligned": (0, 0), "same odd offset": (1, 1), "different offsets": (0, 3)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("offsets", OFFSETS, ids=str)
def test_reduce_into_matches_numpy(cp, dtype, op, reverse, offsets):
    rng = np.random.default_rng(0)
    n, (a, b) = 100_003, OFFSETS[offsets]
    nans = op in ("max", "min")           # arithmetic on NaN gives hardware-specific payloads
    dst, src = random(n + 8, dtype, rng, nans), random(n + 8, dtype, rng, nans)
    expected = dst.copy()
    reference.reduce_into(expected[a:a + n], src[b:b + n], op, reverse)
    device_dst, device_src = cp.asarray(dst), cp.asarray(src)
    out = kernels.reduce_into(device_dst[a:a + n], device_src[b:b + n], op, reverse=reverse)
    assert out.shape == (n,)
    assert same_bits(cp, device_dst, expected)                # neighbours untouched too
    assert same_bits(cp, device_src, src)


@pytest.mark.parametrize("n", [0, 1, 7, 4097])
def test_reduce_into_small_and_empty(cp, n):
    rng = np.random.default_rng(1)
    dst, src = random(n, "float32", rng), random(n, "float32", rng)
    device = cp.asarray(dst)
    kernels.reduce_into(device, cp.asarray(src), "sum")
    assert same_bits(cp, device, reference.reduce_into(dst, src, "sum"))


def test_reduce_into_larger_than_one_pass_of_the_grid(cp):
    """More chunks than blocks: every block loops (grid-stride)."""
    blocks = cuda._max_blocks("reduce.cu", "reduce_into<float, Max>", cp.cuda.runtime.getDevice())
    n = blocks * cuda.MAX_ROWS * cuda.THREADS * 4 + 12_345
    rng = np.random.default_rng(2)
    dst, src = random(n, "float32", rng), random(n, "float32", rng)
    device = cp.asarray(dst)
    kernels.reduce_into(device, cp.asarray(src), "max")
    assert same_bits(cp, device, reference.reduce_into(dst, src, "max"))


# ---- pack, unpack ----------------------------------------------------------------------
LAYOUTS = {"one array": [(300_001,)], "1000 tiny arrays": [(1,)] * 500 + [(2,)] * 300 + [(3,)] * 200,
           "300 uneven arrays": [(int(s),) for s in np.random.default_rng(3).integers(1, 3000, 300)],
           "odd sizes": [(3, 5), (7,), (0,), (1, 1, 13), (20_001,), (2,)],
           "empty arrays": [(0,), (0, 3)], "no arrays": []}


def arena(shapes, dtype, rng, misaligned):
    """(host arena, views): arrays carved from one buffer with gaps between them; aligned:
    each starts at a multiple of 16 elements; misaligned: at odd offsets, 1-3 apart."""
    starts, position = [], 1 if misaligned else 0
    for shape in shapes:
        size = int(np.prod(shape))
        starts.append(position)
        position += size + (int(rng.integers(1, 4)) if misaligned else 16 + (-size) % 16)
    host = poison(position + 3, dtype)

    def views(buffer):
        return [buffer[s:s + int(np.prod(shape))].reshape(shape) for s, shape in zip(starts, shapes)]
    return host, views


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("misaligned", [False, True], ids=["aligned", "odd offsets"])
def test_pack_matches_numpy(cp, dtype, layout, misaligned):
    rng = np.random.default_rng(4)
    shapes = LAYOUTS[layout]
    host_arena, views = arena(shapes, dtype, rng, misaligned)
    for view in views(host_arena):
        view[...] = random(view.size, dtype, rng).reshape(view.shape)
    total, skip = sum(int(np.prod(s)) for s in shapes), int(misaligned)
    bucket = poison(skip + total + 5, dtype)                  # longer than needed: tail stays
    expected = bucket.copy()
    reference.pack(views(host_arena), expected[skip:])
    device_arena, device_bucket = cp.asarray(host_arena), cp.asarray(bucket)
    assert kernels.pack(views(device_arena), device_bucket[skip:]) is not None
    assert same_bits(cp, device_bucket, expected)
    assert same_bits(cp, device_arena, host_arena)            # the sources are only read


@pytest.mark.parametrize("dtype, scale", [(d, 1.0) for d in DTYPES] + [(d, 1 / 3) for d in FLOATS], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("misaligned", [False, True], ids=["aligned", "odd offsets"])
def test_unpack_matches_numpy(cp, dtype, scale, layout, misaligned):
    rng = np.random.default_rng(5)
    shapes = LAYOUTS[layout]
    host_arena, views = arena(shapes, dtype, rng, misaligned)
    total, skip = sum(int(np.prod(s)) for s in shapes), int(misaligned)
    bucket = random(skip + total + 2, dtype, rng)
    expected = host_arena.copy()
    reference.unpack(bucket[skip:], views(expected), scale)
    device_arena = cp.asarray(host_arena)
    kernels.unpack(cp.asarray(bucket)[skip:], views(device_arena), scale=scale)
    assert same_bits(cp, device_arena, expected)               # gaps between arrays untouched


# ---- compress_fp16, unpack_fp16 ---------------------------------------------------------
def gradients(n, rng):
    """float32 values that test the rounding: ordinary, beyond float16 (inf), subnormal."""
    values = random(n, "float32", rng) * 5
    values[rng.integers(0, n, n // 50 + 1)] = 1e6
    values[rng.integers(0, n, n // 50 + 1)] = -3e-7
    values[rng.integers(0, n, n // 50 + 1)] = np.inf
    return values


@pytest.mark.parametrize("scale", [1.0, 0.125, 1 / 3], ids=["1", "1/8", "1/3"])
@pytest.mark.parametrize("offsets", [(0, 0), (1, 1), (0, 2), (3, 0)], ids=str)
def test_compress_fp16_matches_numpy(cp, scale, offsets):
    rng = np.random.default_rng(6)
    n, (a, b) = 50_001, offsets
    bucket, wire = gradients(n + 4, rng), poison(n + 4, "float16")
    expected = wire.copy()
    reference.compress_fp16(bucket[a:a + n], expected[b:b + n], scale)
    device_wire = cp.asarray(wire)
    kernels.compress_fp16(cp.asarray(bucket)[a:a + n], device_wire[b:b + n], scale=scale)
    assert same_bits(cp, device_wire, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("misaligned", [False, True], ids=["aligned", "odd offsets"])
@pytest.mark.parametrize("scale", [1.0, 0.25, 1 / 3], ids=["1", "1/4", "1/3"])
def test_unpack_fp16_matches_numpy(cp, layout, misaligned, scale):
    rng = np.random.default_rng(7)
    shapes = LAYOUTS[layout]
    host_arena, views = arena(shapes, "float32", rng, misaligned)
    total, skip = sum(int(np.prod(s)) for s in shapes), int(misaligned)
    with np.errstate(over="ignore"):
        wire = gradients(skip + total + 2, rng).astype(np.float16)        # 1e6 -> inf
    expected = host_arena.copy()
    reference.unpack_fp16(wire[skip:], views(expected), scale)
    device_arena = cp.asarray(host_arena)
    kernels.unpack_fp16(cp.asarray(wire)[skip:], views(device_arena), scale=scale)
    assert same_bits(cp, device_arena, expected)


# ---- how it launches -------------------------------------------------------------------
def test_a_thousand_arrays_take_one_launch(cp, monkeypatch):
    launches = []
    real = cuda._function

    def counting(*key):
        kernel = real(*key)
        return lambda *args: (launches.append(key[1]), kernel(*args))
    monkeypatch.setattr(cuda, "_function", counting)
    arrays = [cp.asarray(np.full(3, i, np.float32)) for i in range(1000)]
    bucket = kernels.pack(arrays, cp.asarray(poison(3000, "float32")))
    kernels.unpack(bucket, arrays, scale=0.5)
    assert launches == ["multi_copy<float, float, Copy<float>>", "multi_copy<float, float, Scale<float, float>>"]
    assert cp.asnumpy(arrays[999]).tolist() == [499.5] * 3


def test_the_table_is_cached_for_a_repeated_list_of_arrays(cp):
    cuda._TABLES.clear()
    arrays = [cp.asarray(np.arange(n, dtype=np.float64)) for n in (5, 17, 1)]
    bucket = cp.asarray(poison(23, "float64"))
    kernels.pack(arrays, bucket)
    cached = len(cuda._TABLES)
    arrays[1][...] = 7                                         # new contents, same addresses
    kernels.pack(arrays, bucket)
    assert len(cuda._TABLES) == cached
    assert cp.asnumpy(bucket)[5:22].tolist() == [7.0] * 17
    kernels.pack(arrays[:2], bucket)                           # another list: another table
    assert len(cuda._TABLES) == cached + 1


def test_a_plan_keeps_its_arrays_alive(cp):
    """The kernel's table holds only raw addresses: a plan kept after its caller dropped the
    arrays must still own them, or its launches write into freed memory (bench.kernels did
    this, and its later rows timed garbage)."""
    arrays = [cp.ones(n, cp.float32) for n in (3, 70, 1000)]
    bucket, wire = cp.zeros(1073, cp.float32), cp.zeros(1073, cp.float16)
    plans = []
    for make in (lambda a: cuda.plan_pack(a, bucket), lambda a: cuda.plan_unpack(bucket, a, 0.5),
                 lambda a: cuda.plan_unpack_fp16(wire, a, 0.5)):
        before = [sys.getrefcount(a) for a in arrays]
        plans.append(make(arrays))
        assert all(sys.getrefcount(a) > b for a, b in zip(arrays, before)), plans[-1]
    del arrays
    plans[0]()
    assert float(bucket.sum()) == 1073.0                      # packed from the kept arrays


def test_bucket_views_work_on_the_gpu(cp):
    bucket = cp.asarray(np.arange(10, dtype=np.float32))
    views = kernels.bucket_views(bucket, [(2, 2), (6,)])
    assert cp.asnumpy(views[1]).tolist() == [4, 5, 6, 7, 8, 9] and views[0].shape == (2, 2)


def _on(cp, *shape, dtype=np.float64):
    return cp.asarray(np.ones(shape, dtype))


@pytest.mark.parametrize("call, error, message", [
    (lambda cp: kernels.reduce_into(_on(cp, 3), np.ones(3), "sum"), TypeError, "not a mix"),
    (lambda cp: kernels.reduce_into(_on(cp, 3, dtype=np.int8), _on(cp, 3, dtype=np.int8), "sum"),
     TypeError, "int8; the CUDA kernel takes"),
    (lambda cp: kernels.reduce_into(_on(cp, 4, 4)[:, 1], _on(cp, 4), "sum"), ValueError, "not C-contiguous"),
    (lambda cp: kernels.reduce_into(_on(cp, 4), _on(cp, 3), "sum"), ValueError, "equal shapes"),
    (lambda cp: kernels.pack([_on(cp, 5)], _on(cp, 3)), ValueError, "at least 5 elements"),
    (lambda cp: kernels.pack([_on(cp, 2, dtype=np.float32)], _on(cp, 3)), TypeError, "has dtype float32"),
    (lambda cp: kernels.unpack(_on(cp, 4), [_on(cp, 2, 4)[:, :2]]), ValueError, "not C-contiguous"),
    (lambda cp: kernels.compress_fp16(_on(cp, 3), _on(cp, 3, dtype=np.float16)), TypeError, "float64"),
    (lambda cp: kernels.unpack_fp16(_on(cp, 3, dtype=np.float16), [_on(cp, 3)]), TypeError, "float64"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_are_refused_before_launch(cp, call, error, message):
    with pytest.raises(error, match=message):
        call(cp)


def test_arrays_on_another_device_are_refused(cp):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cp.cuda.Device(1):
        elsewhere = cp.ones(3)
    with pytest.raises(ValueError, match="is on GPU 1"):
        kernels.reduce_into(cp.ones(3), elsewhere, "sum")
