"""python -m tests.gpu_session [--out DIR] [--ranks N] [--dry-run]

The one command a first session on a GPU machine runs to verify the whole GPU path and
record its figures. Steps, each run to completion whatever the others do, its output
kept in DIR/<step>.txt (default gpu-session/):
  1 kernels     python -m kernels: CuPy, NVIDIA wheels, NVRTC, driver, devices, compile test
  2 tests       every GPU test file (kernels against NumPy bit for bit, collectives on CuPy
                arrays over mpirun, DDP on CuPy against the CPU, tensor parallelism) and
                the CPU-side GPU tests (build, ordering, stand-in), with -rs so skips show
  3 bench       python -m bench.kernels: kernel bandwidth against a device copy
  4 allreduce   mpirun -n N python -m bench.allreduce --device gpu (with NCCL's rows when
                every rank has its own GPU; N defaults to the GPU count, at least 2)
A summary names each step's outcome and file; the exit status is 0 only if all passed.
Install first: pip install -e '.[gpu,mpi,test]'.
"""
import argparse
import os
import subprocess
import sys
import time

GPU_TESTS = ["tests/test_kernels_cuda.py", "tests/test_gpu.py", "tests/test_nn_gpu.py",
             "tests/test_gpu_collset.py", "tests/test_tensor_parallel_gpu.py",
             "tests/test_kernels_build.py", "tests/test_gpu_ordering.py", "tests/test_kernels_loader.py",
             "tests/test_kernels_setup.py", "tests/test_nccl_layout.py"]


def gpu_count():
    """GPUs CuPy sees (0 without CuPy or a driver)."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


def steps(ranks):
    """(name, command) of every step, in order."""
    python = sys.executable
    tests = [t for t in GPU_TESTS if os.path.exists(t)]
    return [
        ("kernels", [python, "-m", "kernels"]),
        ("tests", [python, "-m", "pytest", "-q", "-rs", *tests]),
        ("bench", [python, "-m", "bench.kernels"]),
        ("allreduce", ["mpirun", "-n", str(ranks), python, "-m", "bench.allreduce", "--device", "gpu",
                       "-b", "8", "-e", "256M", "-f", "4"]),
    ]


def run_step(name, command, out_dir):
    """Run one step with its output in out_dir/name.txt; returns (ok, seconds)."""
    start = time.perf_counter()
    with open(os.path.join(out_dir, f"{name}.txt"), "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    return result.returncode == 0, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-session")
    parser.add_argument("--ranks", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    plan = steps(args.ranks or max(2, gpu_count()))
    if args.dry_run:
        for name, command in plan:
            print(f"{name:<10} {' '.join(command)}")
        return 0
    os.makedirs(args.out, exist_ok=True)
    failed = 0
    for name, command in plan:
        ok, seconds = run_step(name, command, args.out)
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL':<5} {name:<10} {seconds:7.1f} s   {os.path.join(args.out, name)}.txt",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
