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


class OrderedExecutor:
    """Runs jobs one at a time, in submission order, on a lazily started daemon thread.

    Synchronous calls run on the caller's thread when nothing is queued (the fast path,
    no thread hand-off); otherwise they queue behind the asynchronous ones so that every
    rank executes its collectives in the same order.
    """

    def __init__(self, name):
        self._name = name
        self._queue = None
        self._pending = 0
        self._lock = threading.Lock()

    def busy(self):
        return self._pending > 0

    def submit(self, job, description):
        """Queue `job` (a no-argument callable); returns its Work handle."""
        work = Work(description)
        with self._lock:
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._loop, name=self._name, daemon=True).start()
            self._pending += 1
        self._queue.put((job, work))
        return work

    def _loop(self):
        while True:
            job, work = self._queue.get()
            try:
                result, error = job(), None
            except BaseException as exc:  # handed to whoever waits on the Work
                result, error = None, exc
            with self._lock:
                self._pending -= 1
            work._finish(result, error)

    def drain(self):
        """Block until every queued job has finished."""
        if self.busy():
            self.submit(lambda: None, "drain").wait()
