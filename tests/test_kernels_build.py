"""The CUDA sources build (no GPU needed): the self-contained text kernels.cuda hands to
NVRTC for every .cu (headers pasted in, one extern "C" kernel per instance it launches)
compiles with nvcc for sm_80 and sm_90, and under CuPy's own options its PTX never flushes
subnormals. Skipped with the reason where nvcc is absent."""
import glob
import os
import re
import shutil
import subprocess

import pytest

from kernels import cuda
from tests.cupy_standin import CUPY_APPENDED_OPTIONS

SOURCES = sorted(glob.glob(os.path.join(cuda.HERE, "*.cu")))
HEADERS = sorted(glob.glob(os.path.join(cuda.HERE, "*.cuh")))
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (CUDA toolkit)")


def nvcc(source, arch, out_dir, *flags):
    out = out_dir / f"{os.path.basename(source)}.{arch}.cubin"
    command = [NVCC, f"-arch={arch}", "-std=c++17", "-cubin", *flags, "-o", str(out), "-x", "cu", str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def test_every_kernel_file_the_loader_knows_exists_and_vice_versa():
    assert sorted(cuda.NAMES) == sorted(os.path.basename(s) for s in SOURCES)


def test_the_sources_include_no_system_header():
    """NVRTC is not given an include path: only our own .cuh may be included."""
    for path in SOURCES + HEADERS:
        includes = re.findall(r'^\s*#\s*include\s*(\S+)', open(path).read(), flags=re.M)
        assert all(re.fullmatch(r'"\w+\.cuh"', name) for name in includes), (path, includes)


def test_the_block_size_is_the_same_in_python_and_cuda():
    header = open(os.path.join(cuda.HERE, "common.cuh")).read()
    assert re.search(r"constexpr int THREADS = (\d+);", header).group(1) == str(cuda.THREADS)


def test_the_nvrtc_source_has_the_headers_pasted_in():
    text = cuda.source("pack.cu")
    assert not re.search(r"^\s*#\s*(include|pragma once)", text, flags=re.M)
    assert "struct f16" in text and "multi_copy" in text


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("filename", sorted(cuda.NAMES))
def test_every_kernel_nvrtc_gets_compiles(filename, arch, tmp_path):
    """The exact text NVRTC gets (headers pasted in, one ENTRY line per instance), alone in
    an empty folder, compiles without a warning."""
    nvcc(module_text(filename, tmp_path), arch, tmp_path, "-Werror", "all-warnings")


def module_text(filename, tmp_path):
    path = tmp_path / f"module_{filename}"
    path.write_text(cuda.module_source(filename))
    return path


def test_every_instance_has_its_own_plain_kernel_name():
    for filename, expressions in cuda.NAMES.items():
        names = [cuda.entry_name(e) for e in expressions]
        assert len(set(names)) == len(names) and all(n.isidentifier() for n in names), filename
        text = cuda.module_source(filename)
        assert all(text.count(f"_ENTRY({name}, ") == 1 for name in names), filename


@needs_nvcc
@pytest.mark.parametrize("filename", sorted(cuda.NAMES))
def test_no_kernel_flushes_subnormals_under_cupys_compile_options(filename, tmp_path):
    """CuPy appends -ftz=true after our options to every RawModule compile (NVRTC keeps the
    last), which makes plain float32 arithmetic and comparisons flush subnormals to zero,
    unlike NumPy. nvcc with the same option list reproduces it: the PTX of every kernel
    instance must hold no .ftz instruction."""
    ptx = tmp_path / f"{filename}.ptx"
    options = [*cuda.OPTIONS, *CUPY_APPENDED_OPTIONS]
    command = [NVCC, "-arch=sm_80", "-ptx", *options, "-o", str(ptx), "-x", "cu",
               str(module_text(filename, tmp_path))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    text = ptx.read_text()
    assert text.count(".entry") == max(1, len(cuda.NAMES[filename]))      # every instance is there
    flushing = sorted(set(re.findall(r"[\w.]*\.ftz\b[\w.]*", text)))
    assert not flushing, f"{filename}: {flushing}"
