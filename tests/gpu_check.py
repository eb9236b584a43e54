"""GPU checks under mpirun (launched by test_gpu.py; several ranks may share one GPU):
every collective and algorithm on CuPy arrays against the NumPy path, bitwise, and the
GPU-specific bad inputs. Prints "gpu_check ok N" on rank 0."""
import cupy
import numpy as np

import collectives as cc
from tests.mpirun import run_or_abort
from tests.reference import make_input


def same(device_result, host_result, what):
    got = cupy.asnumpy(device_result)
    assert got.shape == host_result.shape, f"{what}: shape {got.shape} != {host_result.shape}"
    assert got.tobytes() == host_result.tobytes(), f"{what}: GPU result differs from the NumPy path"


def check_collectives(comm):
    n, r = comm.size, comm.rank
    for dtype in ("float16", "float32", "float64", "int32", "int64"):
        for count in (0, 1, n + 1, 100003):
            host = make_input(r, count, dtype, "sum")
            for name in comm.algorithms("allreduce", device=True):
                for op in ("sum", "max"):
                    what = f"allreduce {name} {dtype} {op} count={count}"
                    expected = comm.allreduce(host.copy(), op, algorithm=name)
                    same(comm.allreduce(cupy.asarray(host), op, algorithm=name), expected, what)
                    out = cupy.full(count, 7, dtype)
                    same(comm.allreduce(cupy.asarray(host), op, algorithm=name, out=out), expected, what + " out")
            for name in comm.algorithms("reduce_scatter", device=True):
                same(comm.reduce_scatter(cupy.asarray(host), algorithm=name),
                     comm.reduce_scatter(host, algorithm=name), f"reduce_scatter {name} {dtype}")
            for name in comm.algorithms("allgather", device=True):
                same(comm.allgather(cupy.asarray(host), algorithm=name),
                     comm.allgather(host, algorithm=name), f"allgather {name} {dtype}")
            for name in comm.algorithms("broadcast", device=True):
                device = cupy.asarray(host)
                comm.broadcast(device, root=n - 1, algorithm=name)
                same(device, comm.broadcast(host.copy(), root=n - 1, algorithm=name), f"broadcast {name}")
            for name in comm.algorithms("reduce", device=True):
                got = comm.reduce(cupy.asarray(host), "sum", 0, algorithm=name)
                expected = comm.reduce(host.copy(), "sum", 0, algorithm=name)
                if r == 0:
                    same(got, expected, f"reduce {name} {dtype}")
    work = comm.allreduce(cupy.ones(1 << 20, cupy.float32), async_op=True)
    assert float(work.wait()[0]) == n


def check_bad_input(comm):
    cases = [(lambda: comm.allreduce(np.ones(4), out=cupy.ones(4)), TypeError, "same kind"),
             (lambda: comm.allreduce(cupy.ones(4, cupy.int8)), TypeError, "not supported"),
             (lambda: comm.allreduce(cupy.ones((4, 4))[:, 1]), ValueError, "C-contiguous")]
    if cupy.cuda.runtime.getDeviceCount() > 1:
        other = (comm.device + 1) % cupy.cuda.runtime.getDeviceCount()
        with cupy.cuda.Device(other):
            elsewhere = cupy.ones(4)
        cases.append((lambda: comm.allreduce(elsewhere), ValueError, "lives on GPU"))
    if "oneshot" in comm.algorithms("allreduce"):
        cases.append((lambda: comm.allreduce(cupy.ones(4), algorithm="oneshot"), ValueError,
                      "needs host (NumPy) buffers"))
    for call, error, words in cases:
        try:
            call()
        except error as exc:
            assert words in str(exc), str(exc)
        else:
            raise AssertionError(f"accepted bad input, expected {error.__name__} with {words!r}")
    assert comm.allgather(cupy.ones(3, cupy.int8)).sum() == 3 * comm.size   # movement takes any dtype


def main():
    comm = cc.init()
    assert comm.device is not None, "no GPU was selected"
    check_collectives(comm)
    check_bad_input(comm)
    comm.barrier()
    if comm.rank == 0:
        print("gpu_check ok", comm.size, "device", comm.device, flush=True)


if __name__ == "__main__":
    run_or_abort(main)
