"""Staging device buffers through host memory, for an MPI that is not CUDA-aware.

`StagedTransport` wraps a host transport. Algorithms hand it views of device (CuPy)
buffers exactly as they would hand host buffers to the MPI transport: each send copies
the device bytes into a reused pinned host buffer, then sends from there; each receive
lands in pinned memory and is copied to the device when it is waited for. Reductions
stay on the device (the algorithms call kernels.reduce_into on the device views).

The pinned memory is an arena reset at the start of every collective: a collective takes
as many host bytes as its outstanding messages need, and the steady state allocates
nothing. How bytes move between device and host, and how host memory is allocated, are
injected (`DeviceCopies`), so the same logic runs on the CPU in the tests.

Ordering. A collective runs on one host thread under one CUDA stream S (the caller's, or
on the worker a stream that first waited for the caller's queued work: collectives/work.py).
The device work of the collective (reduction kernels, copies into device buffers) is
queued on S; MPI knows nothing of streams. For each buffer:
- a device buffer MPI or the host READS (staged: the device-to-host copy; CUDA-aware: the
  send buffer): the copy synchronises S before the host reads (`to_host` blocks), and a
  CUDA-aware post synchronises S first, so every kernel queued before, the caller's
  included, has written it.
- a device buffer MPI WRITES (CUDA-aware receive): S is synchronised before the receive
  is posted, so no queued kernel still reads it (a pipelined tree's scratch half of chunk
  c while chunk c+2 arrives) or writes it (the caller's own writes to a broadcast buffer)
  once MPI may write; kernels queued after the wait returned run after the data landed.
- a staged receive: MPI writes a fresh pinned slot; the host-to-device copy is queued on
  S only after the receive completed, so kernels that read the device buffer later on S
  see the data.
- the pinned slots: a queued host-to-device copy reads its slot when it runs, so slots
  are reused (the arena reset in begin()) only after the event recorded behind the
  previous collective's last copy has completed, whatever stream or thread runs next.
- the caller: the worker ends every job with an event that Work.wait() synchronises,
  and a synchronous collective's copies are on the caller's own stream.
"""
import numpy as np

from .wrapper import TransportWrapper

ARENA_BLOCK = 4 << 20


class DeviceCopies:
    """The device operations staging needs; the defaults are CuPy's.

    to_host(device_view, host_view): blocking copy, returns when host_view is filled
    to_device(host_view, device_view): copy ordered on the current stream
    synchronize(): wait for the current stream
    record(): an event (with synchronize()) behind the work queued so far on the current stream
    empty_pinned(nbytes): page-locked host memory as a uint8 NumPy array
    """

    def to_host(self, device_view, host_view):
        device_view.get(out=host_view)

    def to_device(self, host_view, device_view):
        device_view.set(host_view)

    def synchronize(self):
        import cupy
        cupy.cuda.get_current_stream().synchronize()

    def record(self):
        import cupy
        event = cupy.cuda.Event(disable_timing=True)
        event.record(cupy.cuda.get_current_stream())
        return event

    def empty_pinned(self, nbytes):
        import cupyx
        return cupyx.empty_pinned((nbytes,), dtype=np.uint8)


class _PinnedArena:
    """Bump allocation out of reused pinned blocks; reset() makes them all free again."""

    def __init__(self, copies):
        self.copies = copies
        self.blocks = []
        self.block, self.offset = 0, 0

    def reset(self):
        self.block, self.offset = 0, 0

    def take(self, nbytes, dtype):
        """A host array of nbytes with `dtype` (1-D), valid until the next reset(). Every
        take starts at its own address, an empty one too: MPI refuses a send and a receive
        buffer at the same address ("Buffers must not be aliased") even when one is empty."""
        itemsize = np.dtype(dtype).itemsize
        aligned = max(64, -(-nbytes // 64) * 64)
        while True:
            if self.block == len(self.blocks):
                self.blocks.append(self.copies.empty_pinned(max(ARENA_BLOCK, aligned)))
            block = self.blocks[self.block]
            if self.offset + aligned <= block.size:
                # NumPy starts an empty slice a[k:k] at a's start; a[k:k+1][:0] stays at k
                view = block[self.offset:self.offset + max(1, nbytes)][:nbytes]
                self.offset += aligned
                return view.view(dtype) if nbytes % itemsize == 0 else view
            if self.offset == 0:                      # too small even when empty: replace it
                self.blocks[self.block] = self.copies.empty_pinned(aligned)
                continue
            self.block, self.offset = self.block + 1, 0


class _StagedRecv:
    __slots__ = ("staged", "inner", "host", "device")

    def __init__(self, staged, inner, host, device):
        self.staged, self.inner, self.host, self.device = staged, inner, host, device

    def wait(self):
        if self.inner is not None:
            self.staged.inner.waitall([self.inner])
            self.finish()

    def finish(self):
        if self.inner is not None:
            self.inner = None
            self.staged._copy_up(self.host, self.device)

    def test(self):
        return self.inner is None or self.inner.test()


class _StagedSend:
    __slots__ = ("staged", "inner")

    def __init__(self, staged, inner):
        self.staged, self.inner = staged, inner

    def wait(self):
        self.staged.inner.waitall([self.inner])

    def finish(self):
        pass

    def test(self):
        return self.inner.test()


class StagedTransport(TransportWrapper):
    """A transport for device buffers over a host-only transport (see module docstring)."""

    def __init__(self, inner, copies=None):
        super().__init__(inner)
        self.copies = copies or DeviceCopies()
        self._arena = _PinnedArena(self.copies)
        self._copied_up = None           # event behind the last host-to-device copy queued

    def rewrap(self, inner):
        return StagedTransport(inner, self.copies)

    @property
    def capabilities(self):
        """The inner transport's, without the shared segment (device buffers are not in it)."""
        return self.inner.capabilities.replace(shared_segment=None)

    def begin(self):
        """Start of a collective: wait until every queued copy out of the pinned arena has
        run (on whatever stream it was queued), then reuse the arena."""
        if self._copied_up is not None:
            self._copied_up.synchronize()
            self._copied_up = None
        self._arena.reset()

    def _copy_up(self, host, device):
        """Queue host -> device on the current stream; begin() waits for it before reuse."""
        self.copies.to_device(host, device)
        self._copied_up = self.copies.record()

    def _to_host(self, device_view):
        host = self._arena.take(device_view.nbytes, device_view.dtype)
        self.copies.to_host(device_view, host)
        return host

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        """Stage `sendbuf` out, receive into pinned memory, copy into `recvbuf`."""
        host_send = None if sendbuf is None else self._to_host(sendbuf)
        host_recv = None if recvbuf is None else self._arena.take(recvbuf.nbytes, recvbuf.dtype)
        self.inner.sendrecv(host_send, dest, host_recv, source)
        if recvbuf is not None:
            self._copy_up(host_recv, recvbuf)

    def isend(self, buf, dest):
        return _StagedSend(self, self.inner.isend(self._to_host(buf), dest))

    def irecv(self, buf, source):
        host = self._arena.take(buf.nbytes, buf.dtype)
        return _StagedRecv(self, self.inner.irecv(host, source), host, buf)

    def waitall(self, requests):
        pending = [r for r in requests if r.inner is not None]
        self.inner.waitall([r.inner for r in pending])
        for request in pending:
            request.finish()

    def __getattr__(self, name):
        """MPI's own collectives, with whole-buffer staging; the rest from the inner transport."""
        if name.startswith("native_") and name[len("native_"):] in self.inner.capabilities.native:
            return _staged_native(self, getattr(self.inner, name))
        return super().__getattr__(name)


def _staged_native(staged, native):
    """MPI's own collective on host copies of the device arguments. The result (always
    the last array argument: out, or the buffer worked in place) is copied back."""
    def run(*args):
        hosts = {}
        host_args = []
        for arg in args:
            if hasattr(arg, "__cuda_array_interface__"):
                if id(arg) not in hosts:             # x is out (in place) stays one buffer
                    hosts[id(arg)] = staged._to_host(arg)
                host_args.append(hosts[id(arg)])
            else:
                host_args.append(arg)
        native(*host_args)
        result = [arg for arg in args if hasattr(arg, "__cuda_array_interface__")][-1]
        staged._copy_up(hosts[id(result)], result)
    return run


class DirectDeviceTransport(TransportWrapper):
    """Device buffers handed straight to a CUDA-aware MPI. The stream is synchronised
    before MPI may read or write a device buffer (every post), since MPI knows nothing of
    CUDA streams (see the ordering argument in the module docstring)."""

    def __init__(self, inner, copies=None):
        super().__init__(inner)
        self.copies = copies or DeviceCopies()

    def rewrap(self, inner):
        return DirectDeviceTransport(inner, self.copies)

    @property
    def capabilities(self):
        """The inner transport's, without the shared segment (device buffers are not in it)."""
        return self.inner.capabilities.replace(shared_segment=None)

    def begin(self):
        pass

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        self.copies.synchronize()
        self.inner.sendrecv(sendbuf, dest, recvbuf, source)

    def isend(self, buf, dest):
        self.copies.synchronize()
        return self.inner.isend(buf, dest)

    def irecv(self, buf, source):
        self.copies.synchronize()
        return self.inner.irecv(buf, source)

    def __getattr__(self, name):
        if name.startswith("native_") and name[len("native_"):] in self.inner.capabilities.native:
            native = getattr(self.inner, name)

            def run(*args):
                self.copies.synchronize()
                native(*args)
            return run
        return super().__getattr__(name)
