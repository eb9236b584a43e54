"""DistributedDataParallel: every rank trains a replica on its share of each batch, and
gradients are averaged by bucketed all-reduces that run while backward is still going.

How it works (the decisions are the ones PyTorch's reducer makes, for the same reasons):
- At construction rank 0's parameters are broadcast, so all replicas start equal.
- Parameters are grouped into buckets of at most `bucket_cap_mb`, in REVERSE registration
  order: backward produces the last layer's gradients first, so the first bucket fills
  first and its all-reduce can start while earlier layers are still differentiating.
- On the CPU each parameter's .grad is a view into its bucket's flat array, so fusing the
  gradients costs no copy: the autograd engine accumulates straight into the bucket.
  On the GPU the fusion kernels pack the gradients into the bucket and unpack the average
  back, with the 1/world scale fused into the unpack.
- A parameter's "gradient is final" hook counts it ready; when a bucket is complete its
  asynchronous all-reduce is launched. Buckets are always launched in bucket order (a
  complete bucket waits for its predecessors), because collectives must be issued in
  the same order on every rank.
- A callback at the end of backward launches whatever did not complete (parameters that
  got no gradient this step contribute zeros, so nothing hangs) and waits for all
  buckets. When loss.backward() returns, every .grad holds the average over ranks, and
  any optimizer works unchanged.
- overlap=False launches everything only at the end of backward, for comparison;
  no_sync() skips communication so gradients accumulate locally; compression="fp16"
  sends each bucket as float16 (pre-divided by the world size, so the sum cannot
  overflow) and restores float32.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

import kernels

from ..autograd import queue_callback
from ..modules import Module

if TYPE_CHECKING:
    from collectives import Communicator


class _Bucket:
    """One flat gradient buffer and the parameters whose gradients live in it."""

    def __init__(self, index, params, device, comm):
        self.index = index
        self.params = params
        self.sizes = [p.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        like = params[0].data
        # On the CPU the bucket lives in the shared segment where there is one (comm.zeros):
        # the shared-memory all-reduce then reads it in place, without a publish copy.
        shape = (int(self.offsets[-1]),)
        self.flat = np.zeros_like(like, shape=shape) if device else comm.zeros(shape, like.dtype)
        self.device = device
        self.views = [self.flat[self.offsets[i]:self.offsets[i + 1]].reshape(p.shape)
                      for i, p in enumerate(params)]
        self.wire = None            # float16 buffer for compression
        self.pending = 0
        self.launched = False
        self.work = None
        self.started = self.finished = None

    @property
    def nbytes(self):
        return self.flat.nbytes


class DistributedDataParallel(Module):
    """Wrap `module` for data-parallel training over `comm` (see the module docstring).

    DistributedDataParallel(module, comm, bucket_cap_mb=25, overlap=True, algorithm="auto",
                            compression=None)
    Call it like the module; state_dict keys gain the prefix "module." as in PyTorch.
    `last_step` holds timings of the latest backward (communication wait, overlap).
    """

    def __init__(self, module: Module, comm: Communicator, bucket_cap_mb: float = 25, overlap: bool = True,
                 algorithm: str = "auto", compression: str | None = None):
        super().__init__()
        if compression not in (None, "fp16"):
            raise ValueError(f"compression must be None or 'fp16', got {compression!r}")
        if bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.comm = comm
        self.overlap = overlap
        self.algorithm = algorithm
        self.compression = compression
        self._sync = True
        params = [p for p in module.parameters() if p.requires_grad]
        if compression == "fp16" and any(p.dtype != np.float32 for p in params):
            raise TypeError("compression='fp16' needs float32 parameters")
        self.buckets = self._make_buckets(params, bucket_cap_mb * (1 << 20), comm)
        self._bucket_of = {id(p): (b, i) for b in self.buckets for i, p in enumerate(b.params)}
        self.last_step = {}
        self._broadcast_parameters()
        for p in params:
            p.register_post_accumulate_grad_hook(self._gradient_ready)
        self._in_backward = False

    # -- set-up ------------------------------------------------------------------------------
    @staticmethod
    def _make_buckets(params, cap_bytes, comm):
        """Reverse registration order, split by dtype and array module, at most cap_bytes
        each (a parameter larger than the cap gets a bucket of its own)."""
        buckets, current, size = [], [], 0
        for p in reversed(params):
            fits = current and current[0].dtype == p.dtype and type(current[0].data) is type(p.data)
            if current and (not fits or size + p.data.nbytes > cap_bytes):
                buckets.append(current)
                current, size = [], 0
            current.append(p)
            size += p.data.nbytes
        if current:
            buckets.append(current)
        return [_Bucket(i, b, device=not isinstance(b[0].data, np.ndarray), comm=comm)
                for i, b in enumerate(buckets)]

    def _broadcast_parameters(self):
        """Make every replica start from rank 0's parameters (one broadcast per bucket)."""
        for bucket in self.buckets:
            for view, p in zip(bucket.views, bucket.params):
                view[...] = p.data
            self.comm.broadcast(bucket.flat, 0)
            for view, p in zip(bucket.views, bucket.params):
                p.data[...] = view
            bucket.flat[...] = 0

    # -- training ----------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module; first point every gradient at its slot of the bucket (CPU)."""
        for bucket in self.buckets:
            if not bucket.device:
                for view, p in zip(bucket.views, bucket.params):
                    if p.grad is None:
                        view[...] = 0
                        p.grad = view
                    elif p.grad is not view:               # the user replaced it: adopt its values
                        view[...] = p.grad
                        p.grad = view
        return self.module(*args, **kwargs)

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Within this block backward only accumulates gradients locally (no all-reduce);
        the first backward after it averages the accumulated gradients."""
        previous = self._sync
        self._sync = False
        try:
            yield
        finally:
            self._sync = previous

    def _start_backward(self):
        self._in_backward = True
        self.last_step.clear()
        self.last_step["backward_start"] = time.perf_counter()
        for bucket in self.buckets:
            bucket.pending = len(bucket.params)
            bucket.launched = False
            bucket.work = None
        queue_callback(self._finish_backward)

    def _gradient_ready(self, param):
        if not self._sync:
            return
        if not self._in_backward:
            self._start_backward()
        bucket, _ = self._bucket_of[id(param)]
        bucket.pending -= 1
        if self.overlap:
            self._launch_ready_buckets()

    def _launch_ready_buckets(self, force=False):
        """Launch complete buckets in bucket order; with force, launch all the rest."""
        for bucket in self.buckets:
            if bucket.launched:
                continue
            if bucket.pending > 0 and not force:
                return
            self._launch(bucket)

    def _launch(self, bucket):
        bucket.launched = True
        if bucket.device:
            self._pack(bucket)
        bucket.started = time.perf_counter()
        if self.compression == "fp16":
            if bucket.wire is None:
                bucket.wire = np.empty_like(bucket.flat, dtype=np.float16)
            kernels.compress_fp16(bucket.flat, bucket.wire, scale=1.0 / self.comm.size)
            bucket.work = self.comm.allreduce(bucket.wire, "sum", algorithm=self.algorithm, async_op=True)
        else:
            op = "sum" if bucket.device else "avg"      # on the GPU, unpack applies 1/world
            bucket.work = self.comm.allreduce(bucket.flat, op, algorithm=self.algorithm, async_op=True)

    def _finish_backward(self):
        """End of backward: launch what is left, wait for every bucket, write the averages."""
        self.last_step["backward_end"] = end = time.perf_counter()
        self._launch_ready_buckets(force=True)
        for bucket in self.buckets:
            bucket.work.wait()
            bucket.finished = time.perf_counter()
            scale = 1.0 / self.comm.size
            if self.compression == "fp16":          # CPU: the grads are views of the bucket
                kernels.unpack_fp16(bucket.wire, [p.grad for p in bucket.params], scale=1.0)
            elif bucket.device:
                kernels.unpack(bucket.flat, [p.grad for p in bucket.params], scale=scale)
        done = time.perf_counter()
        first = min(b.started for b in self.buckets)
        self.last_step.update(
            wait=done - end,                                    # backward's wait for communication
            communication=max(b.finished for b in self.buckets) - first,   # wall time of all buckets
            hidden=max(0.0, min(end, done) - first),            # of which before backward ended
            buckets=len(self.buckets))
        self._in_backward = False

    @staticmethod
    def _pack(bucket):
        """GPU: copy this step's gradients into the bucket in one kernel launch (a
        parameter that got no gradient this step contributes zeros)."""
        for p in bucket.params:
            if p.grad is None:
                p.grad = np.zeros_like(p.data)
        kernels.pack([p.grad for p in bucket.params], bucket.flat)
