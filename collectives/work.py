"""Asynchronous collectives: handles, and the one background thread per communicator that
runs them in call order."""
import queue
import threading


class Work:
    """Handle of an asynchronous collective: wait() returns its result, test() polls."""

    def __init__(self, description):
        self.description = description
        self._done = threading.Event()
        self._result = None
        self._error = None

    def _finish(self, result=None, error=None):
        self._result, self._error = result, error
        self._done.set()

    def test(self):
        """True once the collective has finished (successfully or not); never blocks."""
        return self._done.is_set()

    def wait(self, timeout=None):
        """Block until the collective finished; return its result or raise its error."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.description} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
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

    def busy(self):
        return self._pending > 0

    def submit(self, job, description):
        """Queue `job` (a no-argument callable); returns its Work handle."""
        work = Work(description)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{description}: the communicator was freed")
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._pending += 1
        self._queue.put((job, work))
        return work

    def _loop(self):
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job, work = item
            try:
                result, error = job(), None
            except BaseException as exc:  # handed to whoever waits on the Work
                result, error = None, exc
            with self._lock:
                self._pending -= 1
            work._finish(result, error)
            # drop this job's references before blocking on the next one: a finished job
            # must not keep its Communicator (or its result) alive
            del item, job, work, result, error

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
