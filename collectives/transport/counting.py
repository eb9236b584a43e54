"""A wrapper that counts what its rank sends (bench.parallel reports it)."""
from .wrapper import TransportWrapper


class CountingTransport(TransportWrapper):
    """Counts the messages and bytes this rank sends (`messages`, `sent`)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.sent = 0
        self.messages = 0

    def rewrap(self, inner):
        return CountingTransport(inner)

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        if sendbuf is not None:
            self.sent += sendbuf.nbytes
            self.messages += 1
        self.inner.sendrecv(sendbuf, dest, recvbuf, source)

    def isend(self, buf, dest):
        self.sent += buf.nbytes
        self.messages += 1
        return self.inner.isend(buf, dest)
