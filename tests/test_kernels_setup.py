"""A GPU machine with only a driver (bug 6): the `gpu` extra pins CuPy's major version and
brings NVRTC as a wheel, kernels.wheels loads a wheel's library by path so that CuPy's
later load by name succeeds without LD_LIBRARY_PATH, and `python -m kernels` reports what
it found (checked here without CuPy, and on the CuPy stand-in)."""
import io
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import setuptools

import kernels.__main__ as report
from tests import cupy_standin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_gpu_extra_pins_cupy_13_and_brings_the_libraries(monkeypatch):
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(ROOT)
    exec(compile(open("setup.py").read(), "setup.py", "exec"), {"__name__": "setup"})
    gpu = captured["extras_require"]["gpu"]
    assert "cupy-cuda12x>=13.6,<14" in gpu
    assert any(r.startswith("nvidia-cuda-nvrtc-cu12") for r in gpu)
    assert any(r.startswith("nvidia-cuda-runtime-cu12") for r in gpu)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_a_wheel_library_loaded_by_path_serves_a_later_load_by_name(tmp_path):
    """What CuPy does after preload(): dlopen("libnvrtc.so.12") with nothing on the loader
    path. A stand-in library with that soname sits where the NVRTC wheel puts it."""
    lib = tmp_path / "site" / "nvidia" / "cuda_nvrtc" / "lib"
    lib.mkdir(parents=True)
    (tmp_path / "nvrtc.c").write_text("int nvrtcVersion(int* major) { *major = 12; return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libnvrtc.so.12", "-o", str(lib / "libnvrtc.so.12"),
                    str(tmp_path / "nvrtc.c")], check=True)
    script = textwrap.dedent("""
        import ctypes, sys
        from kernels import wheels
        found = wheels.preload()["nvrtc"]
        assert found and found.endswith("libnvrtc.so.12"), found
        major = ctypes.c_int()
        ctypes.CDLL("libnvrtc.so.12").nvrtcVersion(ctypes.byref(major))    # by name, as CuPy does
        print("loaded by name", major.value)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), ROOT]))
    env.pop("LD_LIBRARY_PATH", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "loaded by name 12" in result.stdout


def test_the_report_says_plainly_that_cupy_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy raises ImportError
    out = io.StringIO()
    assert report.main(out) == 1
    assert "CuPy           MISSING" in out.getvalue() and "cannot run here" in out.getvalue()


def test_the_report_on_a_working_gpu(monkeypatch, tmp_path):
    if cupy_standin.GXX is None:
        pytest.skip("g++ is not installed")
    cupy_standin.install(monkeypatch, tmp_path)
    out = io.StringIO()
    try:
        assert report.main(out) == 0, out.getvalue()
    finally:
        cupy_standin.clear_caches()
    text = out.getvalue()
    for expected in ("CuPy           13.6.0", "GPU 0", "PCI 0000:10:00.0", "reduce.cu: ok",
                     "subnormals kept", "GPU path ready"):
        assert expected in text, text


def test_the_gpu_session_command_plans_every_step(capsys):
    from tests import gpu_session
    assert gpu_session.main(["--dry-run", "--ranks", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["kernels", "tests", "bench", "allreduce"]
    assert "mpirun -n 4" in lines[3] and "--device gpu" in lines[3] and "tests/test_gpu.py" in lines[1]


def test_a_gpu_session_step_keeps_its_output_and_outcome(tmp_path):
    from tests import gpu_session
    ok, _ = gpu_session.run_step("fails", [sys.executable, "-c", "print('said'); raise SystemExit(3)"], str(tmp_path))
    assert not ok and "said" in (tmp_path / "fails.txt").read_text()
