"""The Work objects the backend returns: torch Futures behind PyTorch's Work interface."""
import torch
import torch.distributed as dist


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


class PointToPointWork(Work):
    """The Work of a send or receive: the engine posts it at once; wait() completes it
    (bounded by the communicator's timeout), copies a working copy back into the
    tensor and completes the future (get_future's value appears once waited)."""

    def __init__(self, request, staged, tensors):
        super().__init__(torch.futures.Future())
        self._request, self._staged, self._tensors = request, staged, tensors

    def wait(self, timeout=None):
        if not self._future.done():
            try:
                self._request.wait()
                self._staged.finish()
            except BaseException as error:
                self._future.set_exception(error)
                raise
            self._future.set_result(self._tensors)
        return super().wait(timeout)

    def is_completed(self):
        return self._future.done() or self._request.test()
