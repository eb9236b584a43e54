"""mpirun -n 4 python -m bench.allreduce [-b 8 -e 16M -f 2 -n 20 -w 5 -d float32 -o sum -a all]
mpirun -n 4 python -m bench.allreduce --device gpu     (CuPy buffers; plus NCCL's own rows)

All-reduce of every algorithm (ours; MPI's own, through our communicator as algorithm
"mpi" and straight from mpi4py as "mpi4py"; NCCL's on GPUs), nccl-tests style: out-of-place
and in-place time, algbw and busbw = algbw * 2(n-1)/n, and the number of wrong elements.
"""
import socket
import sys

from bench import mpi_direct
from bench.common import reduce_float64
from bench.harness import Collective, main


def _run(comm, x, out, op, root, algorithm, inplace):
    return comm.allreduce(x, op, algorithm=algorithm, out=out)


def _expected(inputs, op, root, rank):
    return reduce_float64(inputs, op)


def gpu_identity(cupy):
    """This rank's GPU as (host name, PCI bus id): unique across a job, unlike the device
    ordinal (every node, and a scheduler giving each rank one visible GPU, count from 0)."""
    return socket.gethostname(), cupy.cuda.Device(cupy.cuda.runtime.getDevice()).pci_bus_id


def nccl_layout_problem(identities):
    """Why NCCL cannot run with these per-rank (host, GPU) identities, in one line, or None
    when every rank has its own GPU (NCCL refuses two ranks on one GPU)."""
    seen = {}
    for rank, identity in enumerate(identities):
        if identity in seen:
            host, bus = identity
            return (f"ranks {seen[identity]} and {rank} share GPU {bus} on {host} and NCCL needs "
                    f"one GPU per rank; no nccl rows (run one rank per GPU to compare with NCCL)")
        seen[identity] = rank
    return None


def nccl_baseline(comm, args, say):
    """On GPUs, NCCL's own all-reduce on the same buffers, as one more row set ("nccl").

    The NCCL unique id travels over MPI from rank 0. NCCL refuses several ranks on one GPU
    (found by host and PCI bus id); then, or without cupy.cuda.nccl, this says why in one
    line and returns no rows.
    """
    if args.device != "gpu":
        return {}
    try:
        import cupy
        from cupy.cuda import nccl
    except Exception as error:
        say(f"# nccl: not available ({error}); no nccl rows")
        return {}
    if args.op == "avg" or args.datatype not in _NCCL_TYPES:
        say(f"# nccl: op {args.op} / dtype {args.datatype} not mapped; no nccl rows")
        return {}
    problem = nccl_layout_problem(comm.allgather_object(gpu_identity(cupy)))
    if problem is not None:
        say(f"# nccl: {problem}")
        return {}
    uid = comm.broadcast_object(nccl.get_unique_id() if comm.rank == 0 else None)
    nccl_comm = nccl.NcclCommunicator(comm.size, uid, comm.rank)
    dtype = getattr(nccl, _NCCL_TYPES[args.datatype])
    op = getattr(nccl, "NCCL_" + args.op.upper())

    def run(comm, x, out, op_name, root, inplace):
        target = x if out is None else out
        nccl_comm.allReduce(x.data.ptr, target.data.ptr, x.size, dtype, op,
                            cupy.cuda.get_current_stream().ptr)
        return target
    return {"nccl": run}


def baselines(comm, args, say):
    """The rows beside ours and "mpi": MPI's all-reduce straight from mpi4py on host
    buffers (bench.mpi_direct), NCCL's on GPUs."""
    return {**mpi_direct.baseline("allreduce")(comm, args, say), **nccl_baseline(comm, args, say)}


_NCCL_TYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
               "int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32", "int64": "NCCL_INT64"}


ALLREDUCE = Collective(
    name="allreduce",
    bus_factor=lambda n: 2 * (n - 1) / n,
    count_for=lambda size, n, itemsize: size // itemsize,
    run=_run,
    expected=_expected,
    baselines=baselines,
)

if __name__ == "__main__":
    sys.exit(main(ALLREDUCE))
