"""A transport that wraps another: the base of staging, tracing and counting wrappers.

Everything is handed to the inner transport unchanged; a subclass overrides only what it
changes. The wrapper declares the inner transport's capabilities (a subclass that changes
what is offered overrides `capabilities`), its timeout and step are the inner one's, and
set_timeout/begin_call reach the inner transport. `split` wraps the inner transport's
sub-transport the same way (through `rewrap`), and attributes the wrapper does not define
(MPI's `native_*` collectives, `comm`...) are looked up on the inner transport.
"""


class TransportWrapper:
    """The base wrapper: a Transport that forwards every call to `inner`."""

    def __init__(self, inner):
        self.inner = inner
        self.rank, self.size = inner.rank, inner.size

    @property
    def capabilities(self):
        return self.inner.capabilities

    @property
    def timeout(self):
        return self.inner.timeout

    @property
    def step(self):
        return self.inner.step

    def set_timeout(self, seconds):
        self.inner.set_timeout(seconds)

    def begin_call(self, sequence, signature):
        self.inner.begin_call(sequence, signature)

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        self.inner.sendrecv(sendbuf, dest, recvbuf, source)

    def isend(self, buf, dest):
        return self.inner.isend(buf, dest)

    def irecv(self, buf, source):
        return self.inner.irecv(buf, source)

    def waitall(self, requests):
        self.inner.waitall(requests)

    def allgather_object(self, obj):
        return self.inner.allgather_object(obj)

    def barrier(self):
        self.inner.barrier()

    def free(self, together=True):
        self.inner.free(together)

    def split(self, color, key=0, segment=True):
        sub = self.inner.split(color, key, segment)
        return None if sub is None else self.rewrap(sub)

    def rewrap(self, inner):
        """The same kind of wrapper around another transport (for split)."""
        return type(self)(inner)

    def __getattr__(self, name):
        if name == "inner":                   # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)
