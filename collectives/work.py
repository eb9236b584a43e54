"""Asynchronous collectives: handles, and the one background thread per communicator that
runs them in call order, each under its caller's CUDA device and stream order."""
import queue
import sys
import threading


class DeviceContext:
    """The submitting thread's CUDA device and stream position, for a job run elsewhere.

    CUDA's current device and CuPy's current stream belong to each host thread, so the
    worker must not use its own: at submission the caller's device is noted and an event
    is recorded on the caller's current stream (the only way to name "everything queued
    so far" that also works for per-thread default streams). The worker runs the job on
    that device, on a stream that first waits for the event, and ends by recording a done
    event; Work.wait() synchronises it, so results are complete for any stream and for
    host reads. Every job (synchronous ones on the caller's thread too) also waits on the
    stream for the previous job's done event: a communicator's collectives reuse device
    workspaces, so they must run in call order on the device as well, whatever streams
    they were called from. Cost: two event records and two stream waits per job
    (microseconds).
    """

    def __init__(self, cupy):
        self.cupy = cupy
        self.device = cupy.cuda.runtime.getDevice()
        self.ready = cupy.cuda.Event(disable_timing=True)
        self.ready.record(cupy.cuda.get_current_stream())

    @classmethod
    def capture(cls):
        """The caller's context, or None when CuPy was never imported (host-only jobs pay
        nothing and create no CUDA context) or has no usable device."""
        cupy = sys.modules.get("cupy")
        if cupy is None:
            return None
        try:
            return cls(cupy)
        except Exception:           # CuPy without a driver or a device
            return None

    def run(self, job, after=None):
        """job() on the caller's device, ordered after the caller's queued work and the
        event `after` (the previous job's); returns (result, done event)."""
        cuda = self.cupy.cuda
        with cuda.Device(self.device):
            stream = cuda.get_current_stream()
            stream.wait_event(self.ready)
            if after is not None:
                stream.wait_event(after)
            result = job()
            done = cuda.Event(disable_timing=True)
            done.record(stream)
        return result, done


class Work:
    """Handle of an asynchronous collective: wait() returns its result, test() polls.

    Completion is a lock held from creation until the job finishes (a waiter takes it and
    hands it straight back): every asynchronous call creates one, and a lock costs a few
    percent of a threading.Event (0.16 against 3.1 us here)."""

    def __init__(self, description):
        self.description = description
        self._pending = threading.Lock()
        self._pending.acquire()
        self._finished = False
        self._result = None
        self._error = None
        self._device_done = None    # the job's CUDA event, when it ran under a DeviceContext

    def _finish(self, result=None, error=None, device_done=None):
        self._result, self._error, self._device_done = result, error, device_done
        self._finished = True
        self._pending.release()

    def test(self):
        """True once the collective has finished (successfully or not) on the host; never
        blocks. On a GPU its device work may still be queued then: wait() synchronises it."""
        return self._finished

    def wait(self, timeout=None):
        """Block until the collective finished (on the device too: its work there is
        synchronised); return its result or raise its error."""
        if not self._finished:
            if not self._pending.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
                raise TimeoutError(f"{self.description} did not finish within {timeout} s")
            self._pending.release()
        if self._error is not None:
            raise self._error
        if self._device_done is not None:
            self._device_done.synchronize()
        return self._result

    def __repr__(self):
        return f"<Work {self.description} {'done' if self.test() else 'pending'}>"


_STOP = object()    # queued by close(): the thread ends after the jobs queued before it


class OrderedExecutor:
    """Runs jobs one at a time, in submission order, on a lazily started daemon thread.

    Synchronous calls run on the caller's thread when nothing is queued (the fast path,
    no thread hand-off); otherwise they queue behind the asynchronous ones so that every
    rank executes its collectives in the same order. close() ends the thread. The thread
    holds only the executor (never the Communicator), so a Communicator that is no longer
    referenced can be collected, and its finalizer closes the executor.
    """

    def __init__(self, name):
        self._name = name
        self._queue = None
        self._thread = None
        self._closed = False
        self._pending = 0
        self._lock = threading.Lock()
        self._device_done = None     # the CUDA event behind the last job's device work

    def busy(self):
        return self._pending > 0

    def runs_inline(self):
        """True when run() would call a job straight away on the calling thread: nothing
        queued, and CuPy never imported (no device order to keep)."""
        return self._pending == 0 and "cupy" not in sys.modules

    def submit(self, job, description):
        """Queue `job` (a no-argument callable) to run under the caller's device context;
        returns its Work handle."""
        work = Work(description)
        context = DeviceContext.capture()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{description}: the communicator was freed")
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._pending += 1
        self._queue.put((job, work, context))
        return work

    def _loop(self):
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job, work, context = item
            done = None
            try:
                if context is None:
                    result, error = job(), None
                else:
                    (result, done), error = context.run(job, self._device_done), None
                    self._device_done = done
            except BaseException as exc:  # handed to whoever waits on the Work
                result, error = None, exc
            with self._lock:
                self._pending -= 1
            work._finish(result, error, done)
            # drop this job's references before blocking on the next one: a finished job
            # must not keep its Communicator (or its result) alive
            del item, job, work, result, error, context, done

    def run(self, job, *args):
        """job(*args) on the calling thread (the synchronous fast path, when nothing is
        queued), on the device after the previous job. Returns job's result. Host-only
        (CuPy never imported): one dictionary lookup more than the call itself."""
        if "cupy" not in sys.modules:
            return job(*args)
        context = DeviceContext.capture()
        if context is None:
            return job(*args)
        result, self._device_done = context.run(lambda: job(*args), self._device_done)
        return result

    def close(self, wait=True):
        """Let the jobs already queued finish, then end the thread (joined when `wait`,
        unless called from the thread itself). Later submits raise RuntimeError."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        if wait and thread is not threading.current_thread():
            thread.join()

    def drain(self):
        """Block until every queued job has finished."""
        if self.busy():
            self.submit(lambda: None, "drain").wait()
