"""The ProcessGroup that torch.distributed calls for backend "collectives".

Each operation checks its arguments on the caller's thread, then queues one job on the
group's ordered executor (collectives.work.OrderedExecutor: one thread, call order, the
same order on every rank) and returns a Work at once. The job calls the Communicator's
synchronous collectives on NumPy views of the tensors (tensors.Staged), copies working
copies back, and completes the Work's future with the output tensors, or with the
exception, whose type survives: a stuck call ends in CollectiveTimeout naming the rank.
Waits on that thread sleep between polls rather than spin (transport.waiting's
sleeping_waits): the caller computes meanwhile and keeps the core.
"""
import math

import torch
import torch.distributed as dist

from ..transport.waiting import sleeping_waits
from ..work import OrderedExecutor
from .tensors import Staged, byte_size, joined_bytes, reduce_op, split_bytes_into, synchronize_device
from .work import PointToPointWork, Work

# Longest sleep between two polls of a wait on the group's thread (see _in_background):
# 1 ms beat 0.1 ms per DDP step (more wake-ups) in one interleaved bench run, 4 ranks on 2 cores.
BACKGROUND_MAX_SLEEP = 1e-3


def _check_tag(tag, rank):
    if tag != 0:
        raise ValueError(f"rank {rank}: backend 'collectives' matches messages between two ranks in "
                         f"the order they were sent and takes no tags (got tag={tag})")


def _even(total, parts):
    return [total // parts] * parts


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

    def _submit(self, name, tensors, run, result, opts=None):
        """Queue run() behind every earlier operation of this group; the Work's future
        gets `result` when it returns, or the exception it raised. A call torch marks
        synchronous (opts.asyncOp False) runs at once on the caller's thread when nothing
        is queued: no thread hand-off, and the same order."""
        synchronize_device(tensors)
        future = torch.futures.Future()

        def job():
            try:
                run()
            except BaseException as error:   # handed to whoever waits on the Work
                future.set_exception(error)
                return
            future.set_result(result)
        if opts is not None and not opts.asyncOp and not self._executor.busy():
            job()
        else:
            self._executor.submit(lambda: self._in_background(job), name)
        return Work(future)

    def _in_background(self, job):
        """job() on the group's thread, whose waits sleep instead of spinning: the
        caller's thread usually computes meanwhile (DDP's backward pass) and must keep
        the core; a spinning waiter took half of it when ranks outnumber cores."""
        with sleeping_waits(BACKGROUND_MAX_SLEEP):
            job()

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
        return self._submit("allreduce", tensors, run, tensors, opts)

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
        return self._submit("allreduce_coalesced", tensors, run, tensors, opts)

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
        return self._submit("reduce", tensors, run, tensors, opts)

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
        return self._submit("reduce_scatter_tensor", [input, output], run, [output], opts)

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts=None):
        """Several reduce_scatter_tensor calls as one operation (FSDP2's gradient path)."""
        jobs = [self._reduce_scatter_job("reduce_scatter_tensor_coalesced", o, i, opts)
                for o, i in zip(outputs, inputs, strict=True)]
        return self._submit("reduce_scatter_tensor_coalesced", list(inputs) + list(outputs),
                            _in_turn(jobs), list(outputs), opts)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    def reduce_scatter(self, output_tensors, input_tensors, opts=None):
        """reduce_scatter with a list: input_tensors[0][r] is the block for rank r (all
        the output's shape); joined into one buffer (a copy), then as reduce_scatter_tensor."""
        output = _single(output_tensors, "reduce_scatter")
        blocks = _single(input_tensors, "reduce_scatter")
        self._check_count(blocks, "reduce_scatter inputs")
        self._check_sizes(blocks, byte_size(output), "reduce_scatter inputs")
        joined = torch.cat([b.detach().reshape(-1) for b in blocks])
        run = self._reduce_scatter_job("reduce_scatter", output, joined, opts)
        return self._submit("reduce_scatter", [joined, output], run, output_tensors, opts)

    # -- data movement -----------------------------------------------------------------------
    def broadcast(self, tensors, opts=None):
        """Copy root's tensor into every rank's tensor (engine broadcast, raw bytes)."""
        tensor = _single(tensors, "broadcast")
        root = (opts or dist.BroadcastOptions()).rootRank
        staged = Staged(tensor)

        def run():
            self.comm.broadcast(staged.array, root, algorithm=self._algorithm("broadcast"))
            staged.finish()
        return self._submit("broadcast", tensors, run, tensors, opts)

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
        return self._submit("all_gather_into_tensor", [input, output], run, [output], opts)

    _allgather_base = all_gather_single

    def all_gather_single_coalesced(self, outputs, inputs, opts=None):
        """Several all_gather_into_tensor calls as one operation (FSDP2's parameter path)."""
        jobs = [self._all_gather_job(o, i) for o, i in zip(outputs, inputs, strict=True)]
        return self._submit("all_gather_into_tensor_coalesced", list(inputs) + list(outputs),
                            _in_turn(jobs), list(outputs), opts)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def allgather(self, output_tensors, input_tensors, opts=None):
        """all_gather into a list: output_tensors[0][r] receives rank r's input."""
        outputs = _single(output_tensors, "allgather")
        tensor = _single(input_tensors, "allgather")
        self._check_count(outputs, "all_gather outputs")
        self._check_sizes(outputs, byte_size(tensor), "all_gather outputs")
        source = Staged(tensor)

        def run():
            gathered = self.comm.allgather(source.array, algorithm=self._algorithm("allgather"))
            split_bytes_into(gathered, outputs)
        return self._submit("allgather", [tensor], run, output_tensors, opts)

    def gather(self, output_tensors, input_tensors, opts=None):
        """Rank r's input lands in output_tensors[0][r] on the root (engine gather)."""
        tensor = _single(input_tensors, "gather")
        root = (opts or dist.GatherOptions()).rootRank
        outputs = _single(output_tensors, "gather") if self.comm.rank == root else []
        if self.comm.rank == root:
            self._check_count(outputs, "gather outputs")
            self._check_sizes(outputs, byte_size(tensor), "gather outputs")
        source = Staged(tensor)

        def run():
            gathered = self.comm.gather(source.array, root, algorithm=self._algorithm("gather"))
            if gathered is not None:
                split_bytes_into(gathered, outputs)
        return self._submit("gather", [tensor], run, output_tensors, opts)

    def scatter(self, output_tensors, input_tensors, opts=None):
        """input_tensors[0][r] on the root lands in rank r's output (engine scatter)."""
        output = _single(output_tensors, "scatter")
        root = (opts or dist.ScatterOptions()).rootRank
        if self.comm.rank == root:
            blocks = _single(input_tensors, "scatter")
            self._check_count(blocks, "scatter inputs")
            self._check_sizes(blocks, byte_size(output), "scatter inputs")
            source = joined_bytes(blocks)
        else:                           # same shape everywhere; only the root's bytes are read
            source = torch.empty(byte_size(output) * self.comm.size, dtype=torch.uint8)
        target = Staged(output, fill=False)
        data = Staged(source)

        def run():
            self.comm.scatter(data.array, root, out=target.array, algorithm=self._algorithm("scatter"))
            target.finish()
        return self._submit("scatter", [source, output], run, output_tensors, opts)

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        """all_to_all_single: rows of `input` go to the ranks in blocks of
        input_split_sizes (equal blocks when empty), rows from rank i land in output's
        block i (output_split_sizes). Engine alltoall, or alltoallv for uneven splits."""
        if output.dtype != input.dtype:
            raise ValueError(f"rank {self.comm.rank}: all_to_all_single input is {input.dtype} but "
                             f"output is {output.dtype}")
        send = self._split_bytes(input, input_split_sizes, "input")
        receive = self._split_bytes(output, output_split_sizes, "output")
        source, target = Staged(input), Staged(output, fill=False)

        def run():
            if send is None and receive is None:
                self.comm.alltoall(source.array, out=target.array, algorithm=self._algorithm("alltoall"))
            else:
                self.comm.alltoallv(source.array, send or _even(byte_size(input), self.comm.size),
                                    receive or _even(byte_size(output), self.comm.size), out=target.array)
            target.finish()
        return self._submit("all_to_all_single", [input, output], run, [output], opts)

    alltoall_base = all_to_all_single

    def alltoall(self, output_tensors, input_tensors, opts=None):
        """all_to_all with lists: input_tensors[j] goes to rank j, output_tensors[i]
        comes from rank i (any sizes; engine alltoallv over the joined bytes)."""
        self._check_count(input_tensors, "all_to_all inputs")
        self._check_count(output_tensors, "all_to_all outputs")
        source = Staged(joined_bytes(input_tensors))
        send = [byte_size(t) for t in input_tensors]
        receive = [byte_size(t) for t in output_tensors]

        def run():
            received = self.comm.alltoallv(source.array, send, receive)
            split_bytes_into(received, output_tensors)
        return self._submit("all_to_all", list(input_tensors), run, output_tensors, opts)

    def _split_bytes(self, tensor, split_sizes, what):
        """Byte counts per rank for rows split as `split_sizes` (None when empty: even)."""
        if not split_sizes:
            if tensor.dim() == 0 or tensor.shape[0] % self.comm.size:
                raise ValueError(f"rank {self.comm.rank}: all_to_all_single {what} of shape "
                                 f"{tuple(tensor.shape)} cannot be split evenly over "
                                 f"{self.comm.size} ranks: give split sizes")
            return None
        self._check_count(split_sizes, f"all_to_all_single {what} split sizes")
        if sum(split_sizes) != tensor.shape[0]:
            raise ValueError(f"rank {self.comm.rank}: all_to_all_single {what} split sizes "
                             f"{list(split_sizes)} add up to {sum(split_sizes)}, not the "
                             f"{tensor.shape[0]} rows of the {what}")
        row = tensor.element_size() * math.prod(tensor.shape[1:])
        return [int(s) * row for s in split_sizes]

    # -- point to point --------------------------------------------------------------------
    def send(self, tensors, dstRank, tag=0):
        """Send the tensor to rank dstRank (engine send: posted at once, not queued
        behind collectives; messages between a pair arrive in the order sent)."""
        tensor = _single(tensors, "send")
        _check_tag(tag, self.comm.rank)
        staged = Staged(tensor)
        return PointToPointWork(self.comm.send(staged.array, dstRank, async_op=True), staged, tensors)

    def recv(self, tensors, srcRank, tag=0):
        """Receive the next message from rank srcRank into the tensor (engine recv)."""
        tensor = _single(tensors, "recv")
        _check_tag(tag, self.comm.rank)
        staged = Staged(tensor, fill=False)
        return PointToPointWork(self.comm.recv(staged.array, srcRank, async_op=True), staged, tensors)

    def recv_anysource(self, tensors, tag=0):
        raise ValueError(f"rank {self.comm.rank}: backend 'collectives' receives from a named rank "
                         "only: pass src= to recv/irecv")

    def _check_sizes(self, tensors, size, what):
        if any(byte_size(t) != size for t in tensors):
            raise ValueError(f"rank {self.comm.rank}: {what} must each hold {size} bytes, got "
                             f"{[byte_size(t) for t in tensors]}")

    def barrier(self, opts=None):
        """Return (through the Work) once every rank has entered the barrier."""
        return self._submit("barrier", [], lambda: self.comm.barrier(), [], opts)

    def _check_count(self, tensors, what):
        if len(tensors) != self.comm.size:
            raise ValueError(f"rank {self.comm.rank}: {what} must be a list of {self.comm.size} "
                             f"tensors (one per rank), got {len(tensors)}")

    def shutdown(self):
        """Finish queued operations, end the group's thread and free its Communicator
        (torch calls this from destroy_process_group). Local: no messages."""
        self._executor.close(wait=True)
        self.comm.free()

    def abort(self):
        """Nothing in flight can be cancelled: same as shutdown."""
        self.shutdown()
