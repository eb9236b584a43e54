"""The CUDA kernels: every .cu file compiles for sm_80 and sm_90 (needs nvcc, which CI
has), every template instance the loader names exists, and, on a GPU, every kernel
matches its NumPy twin bit for bit."""
import glob
import os
import shutil
import subprocess

import numpy as np
import pytest

import kernels
from kernels import reference

KERNELS = os.path.dirname(os.path.abspath(kernels.__file__))
SOURCES = sorted(glob.glob(os.path.join(KERNELS, "*.cu")))
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")


def nvcc(source, arch, tmp_path, *flags):
    out = tmp_path / f"{os.path.basename(source)}.{arch}.cubin"
    result = subprocess.run([NVCC, f"-arch={arch}", "-std=c++14", "-cubin", *flags, "-o", str(out), "-x", "cu", source],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def test_there_are_cuda_sources():
    assert SOURCES and all(open(s).read().strip() for s in SOURCES)


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", SOURCES, ids=os.path.basename)
def test_every_cu_file_compiles(source, arch, tmp_path):
    nvcc(source, arch, tmp_path, "-DCOLLECTIVES_INSTANTIATE_ALL", "-Werror", "all-warnings")


@needs_nvcc
def test_every_name_the_loader_asks_for_is_a_valid_instance(tmp_path):
    from kernels import cuda
    probe = tmp_path / "probe.cu"
    lines = [f'#include "{cuda.SOURCE}"', "void probe() {"]
    lines += [f"    (void)&{name};" for name in cuda._names()]
    probe.write_text("\n".join(lines + ["}"]) + "\n")
    nvcc(str(probe), "sm_80", tmp_path)


# -- on a GPU ---------------------------------------------------------------------------
def _gpu():
    try:
        import cupy
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:
        return None


cp = _gpu()
needs_gpu = pytest.mark.skipif(cp is None, reason="needs CuPy and a CUDA device")
DTYPES = ["float16", "float32", "float64", "int32", "int64"]


def random(shape, dtype, rng):
    values = rng.standard_normal(shape) * 20
    if np.dtype(dtype).kind == "f":
        values[..., ::7] = 0.0
        values[..., 1::11] = -0.0
    return values.astype(dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("offset", [0, 1, 3])               # 1, 3: misaligned views, scalar path
def test_reduce_into_matches_numpy(dtype, op, reverse, offset):
    rng = np.random.default_rng(0)
    a, b = random(100003 + offset, dtype, rng), random(100003 + offset, dtype, rng)
    expected = reference.reduce_into(a[offset:].copy(), b[offset:], op, reverse)
    got = cp.asarray(a)[offset:]
    kernels.reduce_into(got, cp.asarray(b)[offset:], op, reverse=reverse)
    assert cp.asnumpy(got).tobytes() == expected.tobytes()


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["one", "many tiny", "odd", "empty"])
def test_pack_and_unpack_match_numpy(dtype, layout):
    rng = np.random.default_rng(1)
    shapes = {"one": [(300001,)], "many tiny": [(1,), (2,), (3,)] * 1700,
              "odd": [(3, 5), (7,), (0,), (1, 1, 13), (20001,)], "empty": [(0,)]}[layout]
    host = [random(shape, dtype, rng) for shape in shapes]
    total = sum(a.size for a in host)
    # views at odd element offsets exercise the unaligned path
    device = [cp.asarray(np.concatenate([[0], a.ravel()]).astype(dtype))[1:].reshape(a.shape) for a in host]
    bucket = cp.full(total + 5, 77, dtype)                           # poisoned
    kernels.pack(device, bucket)
    expected = np.full(total + 5, 77, dtype)
    reference.pack(host, expected)
    assert cp.asnumpy(bucket).tobytes() == expected.tobytes()
    scale = 0.25 if np.dtype(dtype).kind == "f" else 1.0
    outs = [cp.full(a.shape, 55, dtype) for a in host]
    kernels.unpack(bucket, outs, scale=scale)
    references = [np.full(a.shape, 55, dtype) for a in host]
    reference.unpack(expected, references, scale=scale)
    for out, ref in zip(outs, references):
        assert cp.asnumpy(out).tobytes() == ref.tobytes()


@needs_gpu
@pytest.mark.parametrize("scale", [1.0, 0.125])
def test_fp16_compression_matches_numpy(scale):
    rng = np.random.default_rng(2)
    host = [random(shape, "float32", rng) for shape in [(5,), (4097,), (0,), (3, 3)]]
    bucket = np.concatenate([a.ravel() for a in host])
    wire = kernels.compress_fp16(cp.asarray(bucket), cp.full(bucket.size, 9, cp.float16), scale=scale)
    expected = reference.compress_fp16(bucket, np.empty(bucket.size, np.float16), scale=scale)
    assert cp.asnumpy(wire).tobytes() == expected.tobytes()
    outs = [cp.full(a.shape, np.nan, cp.float32) for a in host]
    kernels.unpack_fp16(wire, outs, scale=1 / scale)
    references = [np.empty_like(a) for a in host]
    reference.unpack_fp16(expected, references, scale=1 / scale)
    for out, ref in zip(outs, references):
        assert cp.asnumpy(out).tobytes() == ref.tobytes()


@needs_gpu
def test_bad_input_is_refused_before_launch():
    with pytest.raises(TypeError, match="not a mix"):
        kernels.reduce_into(cp.ones(3), np.ones(3), "sum")
    with pytest.raises(TypeError, match="dtype"):
        kernels.reduce_into(cp.ones(3, cp.int8), cp.ones(3, cp.int8), "sum")
    with pytest.raises(ValueError, match="contiguous"):
        kernels.reduce_into(cp.ones((4, 4))[:, 1], cp.ones(4), "sum")
    with pytest.raises(ValueError, match="bucket only"):
        kernels.pack([cp.ones(5)], cp.ones(3))


def test_kernel_benchmark_says_why_it_cannot_run_without_a_gpu(capsys):
    if cp is not None:
        pytest.skip("a GPU is present: tests/test_gpu.py runs the benchmark for real")
    from bench import kernels as bench_kernels
    assert bench_kernels.main([]) == 0
    assert "needs CuPy and a CUDA GPU" in capsys.readouterr().out


def test_kernel_benchmark_layouts_cover_the_bucket():
    from bench import kernels as bench_kernels
    for sizes in bench_kernels.layouts(6_250_000).values():
        assert sum(sizes) == 6_250_000 and min(sizes) > 0
