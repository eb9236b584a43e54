"""A transport that wraps another: the base of staging, tracing and counting wrappers.

Everything is handed to the inner transport unchanged; a subclass overrides only what it
changes. `split` wraps the inner transport's sub-transport the same way (through
`rewrap`), and attributes the wrapper does not define (MPI's `native_*` collectives,
`comm`, `timeout`...) are looked up on the inner transport.
"""


class TransportWrapper:
    def __init__(self, inner):
        self.inner = inner
        self.rank, self.size = inner.rank, inner.size

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

    def free(self):
        self.inner.free()

    def split(self, color, key=0):
        sub = self.inner.split(color, key)
        return None if sub is None else self.rewrap(sub)

    def rewrap(self, inner):
        """The same kind of wrapper around another transport (for split)."""
        return type(self)(inner)

    def __getattr__(self, name):
        if name == "inner":                   # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)
