"""python -m kernels: what this machine offers the GPU path, in one screen, for a first run
on a new GPU machine: CuPy, the NVIDIA library wheels, NVRTC, the driver, each device, and
a compile-and-run test of every kernel file against its NumPy twin (subnormals included).
Exit status 0 when everything needed is there and the test passed, else 1, with what is
missing said plainly."""
import sys

import numpy as np

from . import cuda, reference, wheels


def _line(out, label, text):
    print(f"{label:<14} {text}", file=out)


def _report_cupy(out):
    """CuPy and the wheels; returns cupy or None."""
    for name, path in wheels.preload().items():
        _line(out, f"{name} wheel", path or "not installed (fine with a CUDA toolkit on the loader path)")
    try:
        import cupy
    except ImportError as error:
        _line(out, "CuPy", f"MISSING: {error} (pip install -e '.[gpu]')")
        return None
    _line(out, "CuPy", getattr(cupy, "__version__", "?"))
    return cupy


def _report_cuda(cupy, out):
    """NVRTC, driver, runtime and devices; returns the device count (0 on failure)."""
    runtime = cupy.cuda.runtime
    try:
        nvrtc = getattr(cupy.cuda, "nvrtc", None)
        _line(out, "NVRTC", ".".join(map(str, nvrtc.getVersion())) if nvrtc else "(not exposed)")
        _line(out, "driver", f"CUDA {runtime.driverGetVersion()}, runtime {runtime.runtimeGetVersion()}")
        count = runtime.getDeviceCount()
    except Exception as error:
        _line(out, "CUDA", f"MISSING: {type(error).__name__}: {error}")
        return 0
    for device in range(count):
        properties = runtime.getDeviceProperties(device)
        name = properties.get("name", b"?")
        name = name.decode() if isinstance(name, bytes) else name
        pci = cupy.cuda.Device(device).pci_bus_id
        _line(out, f"GPU {device}", f"{name}, compute {cupy.cuda.Device(device).compute_capability}, PCI {pci}")
    if not count:
        _line(out, "GPU", "MISSING: the driver reports no device")
    return count


def _compile_test(cupy, out):
    """Compile every kernel file and check one launch of each kind against NumPy; True if all agree."""
    ok = True
    for filename in sorted(cuda.NAMES):
        try:
            cuda._module(filename, cupy.cuda.runtime.getDevice())
            _line(out, "compile", f"{filename}: ok")
        except Exception as error:
            _line(out, "compile", f"{filename}: FAILED {type(error).__name__}: {str(error)[:300]}")
            ok = False
    if not ok:
        return False
    tiny = np.float32(1e-45)                          # the smallest subnormal: flushing shows
    host = np.array([tiny, 2e-40, -0.0, 1.5, 3.0], np.float32)
    device = cupy.asarray(host)
    cuda.reduce_into(device, cupy.asarray(host), "sum")
    expected = reference.reduce_into(host.copy(), host, "sum")
    same = cupy.asnumpy(device).tobytes() == expected.tobytes()
    _line(out, "run", "reduce_into matches NumPy bit for bit (subnormals kept)" if same
          else f"FAILED: reduce_into gave {cupy.asnumpy(device)}, NumPy {expected}")
    return same


def main(out=sys.stdout) -> int:
    """Print the report; 0 when the GPU path is ready, 1 otherwise."""
    cupy = _report_cupy(out)
    if cupy is None or not _report_cuda(cupy, out):
        _line(out, "result", "the GPU path cannot run here (CPU buffers work as always)")
        return 1
    ok = _compile_test(cupy, out)
    _line(out, "result", "GPU path ready" if ok else "the GPU path is NOT ready: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
