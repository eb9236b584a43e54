"""The ProcessGroup that torch.distributed calls for backend "collectives".

Each operation checks its arguments on the caller's thread, then queues one job on the
group's ordered executor (collectives.work.OrderedExecutor: one thread, call order, the
same order on every rank) and returns a Work at once. The job calls the Communicator's
synchronous collectives on NumPy views of the tensors (tensors.Staged), copies working
copies back, and completes the Work's future with the output tensors, or with the
exception, whose type survives: a stuck call ends in CollectiveTimeout naming the rank.
"""
import torch
import torch.distributed as dist

from ..work import OrderedExecutor
from .tensors import Staged, byte_size, reduce_op, split_bytes_into, synchronize_device


class Work(dist._Work):
    """A torch Work over a torch Future: wait() blocks until the job finished and
    re-raises its error (same type); get_future() serves DDP communication hooks."""

    def __init__(self, future):
        super().__init__()
        self._future = future

    def wait(self, timeout=None):
        self._future.wait()
        return True

    def get_future(self):
        return self._future

    def is_completed(self):
        return self._future.done()

    def is_success(self):
        if not self._future.done():
            raise RuntimeError("is_success() asked of an operation still in flight")
        try:
            self._future.value()
            return True
        except Exception:
            return False

    def exception(self):
        try:
            self._future.value()
        except Exception as error:
            return error
        return None

    def result(self):
        return self._future.value()


def _single(tensors, what):
    if len(tensors) != 1:
        raise ValueError(f"backend 'collectives': {what} takes one tensor per rank, got {len(tensors)}")
    return tensors[0]


def _in_turn(jobs):
    """One job that runs `jobs` one after another."""
    def run():
        for job in jobs:
            job()
    return run


class ProcessGroup(dist.ProcessGroup):
    """torch.distributed operations over one collectives.Communicator (see the module
    docstring); `algorithms` maps a collective's name to the algorithm it uses."""

    def __init__(self, comm, algorithms=None):
        super().__init__(comm.rank, comm.size)
        self.comm = comm
        self.algorithms = dict(algorithms or {})
        self._group_name = self._group_desc = ""
        self._executor = OrderedExecutor(f"torch-collectives-rank{comm.rank}")

    def getBackendName(self):
        return "collectives"

    # torch names every group after creating it; a Python group keeps the names itself
    def setGroupName(self, name):
        self._group_name = name

    def getGroupName(self):
        return self._group_name

    def setGroupDesc(self, desc):
        self._group_desc = desc

    def getGroupDesc(self):
        return self._group_desc

    def __repr__(self):
        return f"<collectives ProcessGroup rank {self.comm.rank} of {self.comm.size}>"

    def _algorithm(self, collective):
        return self.algorithms.get(collective, "auto")

    def _submit(self, name, tensors, run, result):
        """Queue run() behind every earlier operation of this group; the Work's future
        gets `result` when it returns, or the exception it raised."""
        synchronize_device(tensors)
        future = torch.futures.Future()

        def job():
            try:
                run()
            except BaseException as error:   # handed to whoever waits on the Work
                future.set_exception(error)
                return
            future.set_result(result)
        self._executor.submit(job, name)
        return Work(future)

    # -- reductions ------------------------------------------------------------------------
    def allreduce(self, tensors, opts=None):
        """Reduce the tensor over all ranks, in place: the engine's allreduce (cost: see
        Communicator.allreduce)."""
        tensor = _single(tensors, "allreduce")
        op, factor = reduce_op((opts or dist.AllreduceOptions()).reduceOp)
        staged = Staged(tensor, reduced=True, factor=factor)

        def run():
            self.comm.allreduce(staged.array, op, algorithm=self._algorithm("allreduce"))
            staged.finish()
        return self._submit("allreduce", tensors, run, tensors)

    def allreduce_coalesced(self, tensors, opts=None):
        """All-reduce several tensors as one flat buffer per dtype (one engine call each)."""
        op, factor = reduce_op((opts or dist.AllreduceCoalescedOptions()).reduceOp)
        groups = {}
        for t in tensors:
            groups.setdefault(t.dtype, []).append(t)
        packed = [(Staged(torch.cat([t.detach().reshape(-1) for t in group]), reduced=True,
                          factor=factor), group) for group in groups.values()]

        def run():
            for staged, group in packed:
                self.comm.allreduce(staged.array, op, algorithm=self._algorithm("allreduce"))
                staged.finish()
                offset = 0
                for t in group:
                    t.detach().copy_(staged.tensor[offset:offset + t.numel()].view(t.shape))
                    offset += t.numel()
        return self._submit("allreduce_coalesced", tensors, run, tensors)

    def reduce(self, tensors, opts=None):
        """Reduce the tensor over all ranks into root's tensor; other ranks' tensors are
        left as they were (engine reduce)."""
        tensor = _single(tensors, "reduce")
        opts = opts or dist.ReduceOptions()
        op, factor = reduce_op(opts.reduceOp)
        staged = Staged(tensor, reduced=True, factor=factor)
        root = opts.rootRank

        def run():
            self.comm.reduce(staged.array, op, root, algorithm=self._algorithm("reduce"))
            if self.comm.rank == root:
                staged.finish()
        return self._submit("reduce", tensors, run, tensors)

    def _reduce_scatter_job(self, name, output, joined, opts):
        """The job that reduces `joined` (size * output.numel() elements) and leaves this
        rank's block in `output` (engine reduce_scatter with equal blocks)."""
        if joined.numel() != output.numel() * self.comm.size or joined.dtype != output.dtype:
            raise ValueError(f"rank {self.comm.rank}: {name} needs an input of {self.comm.size} x "
                             f"{output.numel()} {output.dtype} elements (world size x output), got "
                             f"{joined.numel()} {joined.dtype}")
        op, factor = reduce_op((opts or dist.ReduceScatterOptions()).reduceOp)
        source = Staged(joined, reduced=True, factor=factor)
        target = Staged(output, reduced=True, fill=False)

        def run():
            self.comm.reduce_scatter(source.array, op, out=target.array,
                                     algorithm=self._algorithm("reduce_scatter"))
            target.finish()
        return run

    def reduce_scatter_single(self, output, input, opts=None):
        """reduce_scatter_tensor: block r of the reduced `input` lands in rank r's `output`."""
        run = self._reduce_scatter_job("reduce_scatter_tensor", output, input, opts)
        return self._submit("reduce_scatter_tensor", [input, output], run, [output])

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts=None):
        """Several reduce_scatter_tensor calls as one operation (FSDP2's gradient path)."""
        jobs = [self._reduce_scatter_job("reduce_scatter_tensor_coalesced", o, i, opts)
                for o, i in zip(outputs, inputs, strict=True)]
        return self._submit("reduce_scatter_tensor_coalesced", list(inputs) + list(outputs),
                            _in_turn(jobs), list(outputs))

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    def reduce_scatter(self, output_tensors, input_tensors, opts=None):
        """reduce_scatter with a list: input_tensors[0][r] is the block for rank r (all
        the output's shape); joined into one buffer (a copy), then as reduce_scatter_tensor."""
        output = _single(output_tensors, "reduce_scatter")
        blocks = _single(input_tensors, "reduce_scatter")
        self._check_count(blocks, "reduce_scatter inputs")
        joined = torch.cat([b.detach().reshape(-1) for b in blocks])
        run = self._reduce_scatter_job("reduce_scatter", output, joined, opts)
        return self._submit("reduce_scatter", [joined, output], run, output_tensors)

    # -- data movement -----------------------------------------------------------------------
    def broadcast(self, tensors, opts=None):
        """Copy root's tensor into every rank's tensor (engine broadcast, raw bytes)."""
        tensor = _single(tensors, "broadcast")
        root = (opts or dist.BroadcastOptions()).rootRank
        staged = Staged(tensor)

        def run():
            self.comm.broadcast(staged.array, root, algorithm=self._algorithm("broadcast"))
            staged.finish()
        return self._submit("broadcast", tensors, run, tensors)

    def _all_gather_job(self, output, input):
        """The job that puts rank r's `input` into block r of every rank's `output`."""
        if byte_size(output) != byte_size(input) * self.comm.size or output.dtype != input.dtype:
            raise ValueError(f"rank {self.comm.rank}: all_gather_into_tensor needs an output of "
                             f"{self.comm.size} x {input.numel()} {input.dtype} elements, got "
                             f"{output.numel()} {output.dtype}")
        source, target = Staged(input), Staged(output, fill=False)

        def run():
            self.comm.allgather(source.array, out=target.array, algorithm=self._algorithm("allgather"))
            target.finish()
        return run

    def all_gather_single(self, output, input, opts=None):
        """all_gather_into_tensor: rank r's input lands in block r of every output."""
        run = self._all_gather_job(output, input)
        return self._submit("all_gather_into_tensor", [input, output], run, [output])

    _allgather_base = all_gather_single

    def all_gather_single_coalesced(self, outputs, inputs, opts=None):
        """Several all_gather_into_tensor calls as one operation (FSDP2's parameter path)."""
        jobs = [self._all_gather_job(o, i) for o, i in zip(outputs, inputs, strict=True)]
        return self._submit("all_gather_into_tensor_coalesced", list(inputs) + list(outputs),
                            _in_turn(jobs), list(outputs))

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def allgather(self, output_tensors, input_tensors, opts=None):
        """all_gather into a list: output_tensors[0][r] receives rank r's input."""
        outputs = _single(output_tensors, "allgather")
        tensor = _single(input_tensors, "allgather")
        self._check_count(outputs, "all_gather outputs")
        if any(byte_size(o) != byte_size(tensor) for o in outputs):
            raise ValueError(f"rank {self.comm.rank}: all_gather outputs must each hold "
                             f"{tensor.numel()} {tensor.dtype} elements like the input")
        source = Staged(tensor)

        def run():
            gathered = self.comm.allgather(source.array, algorithm=self._algorithm("allgather"))
            split_bytes_into(gathered, outputs)
        return self._submit("allgather", [tensor], run, output_tensors)

    def barrier(self, opts=None):
        """Return (through the Work) once every rank has entered the barrier."""
        return self._submit("barrier", [], self.comm.barrier, [])

    def _check_count(self, tensors, what):
        if len(tensors) != self.comm.size:
            raise ValueError(f"rank {self.comm.rank}: {what} must be a list of {self.comm.size} "
                             f"tensors (one per rank), got {len(tensors)}")

    def shutdown(self):
        """Finish queued operations (torch calls this from destroy_process_group)."""
        self._executor.drain()

    def abort(self):
        """Nothing in flight can be cancelled: same as shutdown."""
        self.shutdown()

