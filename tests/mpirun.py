"""Launching real MPI jobs from tests."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpirun(n, *args, timeout=240, launcher_args=(), env=None):
    """Run `mpirun [launcher_args] -n n python *args` from the repository root, with extra
    environment variables `env`; returns the CompletedProcess."""
    pytest.importorskip("mpi4py")
    launcher = shutil.which("mpirun") or shutil.which("mpiexec")
    if launcher is None:
        pytest.skip("no mpirun on PATH (pip install '.[mpi]')")
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([launcher, *launcher_args, "-n", str(n), sys.executable, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def shared_mappings():
    """Memory mappings of /dev/shm files in this process, unlinked ones included (an MPI
    shared window is one or more until it is freed)."""
    with open("/proc/self/maps") as maps:
        return sum("/dev/shm/" in line for line in maps)


def run_or_abort(main):
    """Run a check script's main() under mpirun; on any failure print the traceback and
    abort the whole job, so that the other ranks do not wait forever."""
    try:
        main()
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stdout.flush()
        from mpi4py import MPI
        MPI.COMM_WORLD.Abort(1)
