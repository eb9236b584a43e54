"""The rest of the collective set, as Communicator methods: all-to-all(v), gather, scatter,
inclusive and exclusive scan, and point-to-point send/recv.

`Collectives` is a mixin of Communicator: it uses the Communicator's argument checks,
algorithm choice (`_resolve`), ordered execution (`_run`), buffer routing (`_route`) and
workspace, exactly as the five original collectives do.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from kernels.arrays import to_numpy

from . import algorithms as registry
from . import buffers
from .arguments import as_int
from .buffers import Array
from .errors import CollectiveMismatch
from .ops import BFLOAT16, check_op, identity
from .partition import partition
from .plans import Plan
from .work import Work


def offsets_from_counts(counts, size, what, rank):
    """Offsets of consecutive blocks of the given element counts; ValueError naming the
    rank unless `counts` holds `size` non-negative ints."""
    counts = list(counts)
    if len(counts) != size:
        raise ValueError(f"rank {rank}: {what} must be {size} ints (one per rank), got {counts!r}")
    counts = [as_int(c, f"rank {rank}: {what}[{i}]") for i, c in enumerate(counts)]
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    return offsets


def check_peer(peer, size, rank, what):
    """ValueError unless `peer` is another rank of the communicator."""
    peer = as_int(peer, f"rank {rank}: {what}", 0, size)
    if peer == rank:
        raise ValueError(f"rank {rank}: cannot {'send to' if what == 'dest' else 'receive from'} "
                         f"itself ({what}={peer}): copy the array instead")
    return peer


class PointToPointWork(Work):
    """Handle of an asynchronous send or receive: wait() completes it (bounded by the
    communicator's timeout) and returns finish() (the received array; None for a send)."""

    def __init__(self, description, request, finish):
        super().__init__(description)
        self._request, self._then = request, finish

    def test(self):
        return self._finished or bool(self._request.test())

    def wait(self, timeout=None):
        if not self._finished:
            try:
                self._request.wait()
                result = self._then()
            except BaseException as error:
                self._finish(error=error)
                raise
            self._finish(result)
        return super().wait()


class Collectives:
    """All-to-all(v), gather, scatter, scan, exscan, send and recv (see module docstring)."""

    def alltoall(self, x: Array, *, algorithm: str = "auto", out: Optional[Array] = None,
                 async_op: bool = False) -> Union[Array, Work]:
        """Block j of this rank's x (blocks by `cc.partition(x.size, n)`) goes to rank j;
        block i of the result came from rank i.

        The result has x's shape when n divides x.size, else it is 1-D (n blocks of this
        rank's block length). Returns `out` or a new array (or a Work). Cost: pairwise,
        n-1 steps moving (n-1)/n of x each way; bruck, ceil(log2 n) steps moving about
        half of x per step; "linear", all n-1 messages at once.
        """
        x, out = buffers.as_array(x), buffers.as_array(out)
        plan = self._plans.get(x, ("alltoall", algorithm, out is None), self._plan_alltoall, algorithm, out)
        return self._exchange(plan, x, out, async_op)

    def _plan_alltoall(self, x, algorithm, out):
        buffers.check_array(x)
        offsets = partition(x.size, self.size)
        own = offsets[self.rank + 1] - offsets[self.rank]
        shape = tuple(x.shape) if own * self.size == x.size else (own * self.size,)
        if out is not None:
            buffers.check_out(out, x, shape)
        name = self._resolve("alltoall", algorithm, x.nbytes)
        recv_offsets = [i * own for i in range(self.size + 1)]
        return Plan(("alltoall", x.size, buffers.dtype_name(x.dtype), name), registry.ALGORITHMS["alltoall"][name],
                    device=buffers.is_device(x), extra=(shape, offsets, recv_offsets))

    def alltoallv(self, x: Array, send_counts: Sequence[int], recv_counts: Sequence[int], *, algorithm: str = "auto",
                  out: Optional[Array] = None, async_op: bool = False) -> Union[Array, Work]:
        """All-to-all with per-rank counts (in elements): the first send_counts[0] elements
        of x go to rank 0, the next send_counts[1] to rank 1, ...; the result (1-D,
        sum(recv_counts) elements) holds recv_counts[i] elements from rank i, in rank
        order. send_counts[j] here must equal recv_counts[i] on rank j (checked across
        ranks in debug mode). "auto" is "pairwise". Cost: pairwise, n-1 steps, each byte
        sent once straight to its destination.
        """
        x, out = buffers.as_array(x), buffers.as_array(out)
        send_counts, recv_counts = tuple(send_counts), tuple(recv_counts)
        key = ("alltoallv", algorithm, out is None, send_counts, recv_counts,
               tuple(map(type, send_counts + recv_counts)))
        plan = self._plans.get(x, key, self._plan_alltoallv, send_counts, recv_counts, algorithm, out)
        return self._exchange(plan, x, out, async_op, check_counts=self.debug)

    def _plan_alltoallv(self, x, send_counts, recv_counts, algorithm, out):
        buffers.check_array(x)
        send_offsets = offsets_from_counts(send_counts, self.size, "send_counts", self.rank)
        recv_offsets = offsets_from_counts(recv_counts, self.size, "recv_counts", self.rank)
        if send_offsets[-1] != x.size:
            raise ValueError(f"rank {self.rank}: send_counts add up to {send_offsets[-1]} but x "
                             f"has {x.size} elements")
        shape = (recv_offsets[-1],)
        if out is not None:
            buffers.check_out(out, x, shape)
        name = "pairwise" if algorithm == "auto" else self._resolve("alltoallv", algorithm, x.nbytes)
        return Plan(("alltoallv", buffers.dtype_name(x.dtype), name), registry.ALGORITHMS["alltoallv"][name],
                    device=buffers.is_device(x), extra=(shape, send_offsets, recv_offsets))

    def _exchange(self, plan, x, out, async_op, check_counts=False):
        """Run an all-to-all(v) plan (extra: the result's shape, send and receive offsets)."""
        buffers.check_instance(x, plan.device)
        if out is not None:
            buffers.check_out(out, x, plan.extra[0])
        return self._run(plan.signature, self._exchange_job, async_op, (plan, x, out, check_counts))

    def _exchange_job(self, plan, x, out, check_counts):
        shape, send_offsets, recv_offsets = plan.extra
        if check_counts:
            self._check_counts_agree(send_offsets, recv_offsets)
        result = buffers.empty(shape, x) if out is None else out
        plan.run(self._transport_for(plan, x), buffers.flat(x), buffers.flat(result),
                 send_offsets, recv_offsets, self._workspace)
        return result

    def _check_counts_agree(self, send_offsets, recv_offsets):
        """Debug mode: every rank's send count to j equals j's receive count from it;
        the same CollectiveMismatch on every rank otherwise, naming the pairs."""
        def counts(offsets):
            return [offsets[i + 1] - offsets[i] for i in range(self.size)]
        table = self.transport.allgather_object((counts(send_offsets), counts(recv_offsets)))
        wrong = [f"rank {i} sends {table[i][0][j]} elements to rank {j}, which expects "
                 f"{table[j][1][i]}" for i in range(self.size) for j in range(self.size)
                 if table[i][0][j] != table[j][1][i]]
        if wrong:
            raise CollectiveMismatch("alltoallv counts disagree across ranks:\n  " + "\n  ".join(wrong[:10]))

    def gather(self, x: Array, root: int = 0, *, algorithm: str = "auto", out: Optional[Array] = None,
               async_op: bool = False) -> Optional[Union[Array, Work]]:
        """Concatenate every rank's x along axis 0 on `root` (a 0-d x counts as shape
        (1,)); every rank passes the same shape. Returns the result on root (`out` there
        if given) and None elsewhere. Cost: tree, ceil(log2 n) steps, the root receiving
        (n-1)/n of the result; linear, one step of n-1 messages into the root.
        """
        x, out = buffers.as_array(x), buffers.as_array(out)
        key = ("gather", root, type(root), algorithm, out is None)
        plan = self._plans.get(x, key, self._plan_gather, root, algorithm, out)
        shape, _, root = plan.extra
        buffers.check_instance(x, plan.device)
        if out is not None and self.rank == root:
            buffers.check_out(out, x, shape)
        return self._run(plan.signature, self._gather_job, async_op, (plan, x, out))

    def _plan_gather(self, x, root, algorithm, out):
        buffers.check_array(x)
        root = self._check_root(root)
        shape = (self.size * x.shape[0],) + tuple(x.shape[1:]) if x.ndim else (self.size,)
        if out is not None and self.rank == root:
            buffers.check_out(out, x, shape)
        offsets = [i * x.size for i in range(self.size + 1)]
        name = self._resolve("gather", algorithm, x.nbytes * self.size)
        return Plan(("gather", tuple(x.shape), buffers.dtype_name(x.dtype), root, name),
                    registry.ALGORITHMS["gather"][name], device=buffers.is_device(x), extra=(shape, offsets, root))

    def _gather_job(self, plan, x, out):
        shape, offsets, root = plan.extra
        result = None
        if self.rank == root:
            result = buffers.empty(shape, x) if out is None else out
        plan.run(self._transport_for(plan, x), buffers.flat(x),
                 None if result is None else buffers.flat(result), offsets, root, self._workspace)
        return result

    def scatter(self, x: Array, root: int = 0, *, algorithm: str = "auto", out: Optional[Array] = None,
                async_op: bool = False) -> Union[Array, Work]:
        """Rank i gets block i (1-D, blocks by `cc.partition(x.size, n)`) of root's x.

        Every rank passes an x of the same shape and dtype; only root's contents are read
        (elsewhere `numpy.empty` will do). Returns `out` or a new array. Cost: tree,
        ceil(log2 n) steps, the root sending (n-1)/n of x; linear, n-1 sends at once.
        """
        x, out = buffers.as_array(x), buffers.as_array(out)
        key = ("scatter", root, type(root), algorithm, out is None)
        plan = self._plans.get(x, key, self._plan_scatter, root, algorithm, out)
        buffers.check_instance(x, plan.device)
        if out is not None:
            buffers.check_out(out, x, plan.extra[0])
        return self._run(plan.signature, self._scatter_job, async_op, (plan, x, out))

    def _plan_scatter(self, x, root, algorithm, out):
        buffers.check_array(x)
        root = self._check_root(root)
        offsets = partition(x.size, self.size)
        shape = (offsets[self.rank + 1] - offsets[self.rank],)
        if out is not None:
            buffers.check_out(out, x, shape)
        name = self._resolve("scatter", algorithm, x.nbytes)
        return Plan(("scatter", x.size, buffers.dtype_name(x.dtype), root, name),
                    registry.ALGORITHMS["scatter"][name], device=buffers.is_device(x), extra=(shape, offsets, root))

    def _scatter_job(self, plan, x, out):
        shape, offsets, root = plan.extra
        result = buffers.empty(shape, x) if out is None else out
        plan.run(self._transport_for(plan, x), buffers.flat(x) if self.rank == root else None,
                 result, offsets, root, self._workspace)
        return result

    def scan(self, x: Array, op: str = "sum", *, algorithm: str = "auto", out: Optional[Array] = None,
             async_op: bool = False) -> Union[Array, Work]:
        """Inclusive prefix reduction: rank r gets x_0 op x_1 op ... op x_r (operands in
        rank order). Writes into `out` if given, else x in place. Cost (recursive
        doubling): ceil(log2 n) steps, each sending, receiving and reducing the buffer."""
        return self._prefix("scan", x, op, algorithm, out, async_op)

    def exscan(self, x: Array, op: str = "sum", *, algorithm: str = "auto", out: Optional[Array] = None,
               async_op: bool = False) -> Union[Array, Work]:
        """Exclusive prefix reduction: rank r gets x_0 op ... op x_{r-1}; rank 0 gets the
        op's identity (0 for sum, 1 for prod, the lowest value for max, the highest for
        min). Writes into `out` if given, else x in place. Cost (recursive doubling):
        ceil(log2 n) steps, each sending and receiving the buffer, reducing it twice."""
        return self._prefix("exscan", x, op, algorithm, out, async_op)

    def _prefix(self, collective, x, op, algorithm, out, async_op):
        x, out = buffers.as_array(x), buffers.as_array(out)
        in_place = out is None
        key = (collective, op, algorithm, in_place)
        plan = self._plans.get(x, key, self._plan_prefix, collective, op, algorithm, out)
        buffers.check_instance(x, plan.device, writeable=in_place, reduces=True)
        if not in_place:
            buffers.check_out(out, x, x.shape)
        return self._run(plan.signature, self._prefix_job, async_op, (plan, x, x if in_place else out))

    def _plan_prefix(self, x, collective, op, algorithm, out):
        buffers.check_array(x, writeable=out is None, reduces=True)
        op = check_op(op, x.dtype)
        if op == "avg":
            raise ValueError(f"rank {self.rank}: {collective} takes 'sum', 'prod', 'max' or "
                             f"'min', not 'avg'")
        if out is not None:
            buffers.check_out(out, x, x.shape)
        name = self._resolve(collective, algorithm, x.nbytes)
        self._check_native_reduction(name, x.dtype)
        return Plan((collective, x.size, buffers.dtype_name(x.dtype), op, name),
                    registry.ALGORITHMS[collective][name], op, buffers.is_device(x), extra=collective)

    def _prefix_job(self, plan, x, target):
        buf = buffers.flat(target)
        if target is not x:
            buf[...] = buffers.flat(x)
        plan.run(self._transport_for(plan, x), buf, plan.op, self._workspace)
        if plan.extra == "exscan" and self.rank == 0:
            buf[...] = identity(plan.op, buf.dtype)
        return target

    def _check_native_reduction(self, name, dtype):
        """TypeError on this rank, before the call starts, where MPI's own collective
        ("mpi") would have to reduce a dtype MPI has no type for (bfloat16)."""
        if name == registry.NATIVE and BFLOAT16 is not None and dtype == BFLOAT16:
            raise TypeError(f"rank {self.rank}: algorithm 'mpi' cannot reduce bfloat16 (MPI has no such "
                            f"type): use one of ours, e.g. algorithm='auto'")

    # -- point to point ---------------------------------------------------------------------
    def send(self, x: Array, dest: int, *, async_op: bool = False) -> Optional[Work]:
        """Send x to rank `dest`. Messages between one pair are received in the order sent;
        they never mix with collectives' messages (they travel on a duplicate of the
        transport). A GPU array is copied to the host first. Returns None, or a Work whose
        wait() completes the send. Cost: one message of x.nbytes."""
        x = buffers.as_array(x)
        buffers.check_array(x)
        dest = check_peer(dest, self.size, self.rank, "dest")
        data = to_numpy(x) if buffers.is_device(x) else x
        request = self._point_to_point().isend(buffers.flat(data), dest)
        work = PointToPointWork(f"send to rank {dest}", request, lambda: None)
        return work if async_op else work.wait()

    def recv(self, x: Array, source: int, *, async_op: bool = False) -> Union[Array, Work]:
        """Receive into x (which must have the sender's byte count) from rank `source`, the
        next message in the order that rank sent them (a GPU array: through a host buffer,
        copied in on the caller's stream). Returns x, or a Work whose wait() returns x.
        Cost: one message of x.nbytes."""
        x = buffers.as_array(x)
        buffers.check_array(x, writeable=True)
        source = check_peer(source, self.size, self.rank, "source")
        if buffers.is_device(x):
            host = np.empty(x.shape, x.dtype)

            def finish():
                x[...] = buffers.array_module(x).asarray(host)
                return x
        else:
            host = x

            def finish():
                return x
        request = self._point_to_point().irecv(buffers.flat(host), source)
        work = PointToPointWork(f"receive from rank {source}", request, finish)
        return work if async_op else work.wait()
