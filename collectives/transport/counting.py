"""A wrapper that counts what its rank sends (collectives.observe.ByteCounter uses it;
bench.parallel reports it)."""
from dataclasses import dataclass

from .wrapper import TransportWrapper


@dataclass
class Counts:
    """Messages and bytes sent; shared by a wrapper and the wrappers of its splits."""
    messages: int = 0
    sent: int = 0


class CountingTransport(TransportWrapper):
    """Counts the messages and bytes this rank sends into `counts` (default: its own)."""

    def __init__(self, inner, counts=None):
        super().__init__(inner)
        self.counts = Counts() if counts is None else counts

    @property
    def sent(self):
        return self.counts.sent

    @property
    def messages(self):
        return self.counts.messages

    def rewrap(self, inner):
        return CountingTransport(inner, self.counts)

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        if sendbuf is not None:
            self.counts.sent += sendbuf.nbytes
            self.counts.messages += 1
        self.inner.sendrecv(sendbuf, dest, recvbuf, source)

    def isend(self, buf, dest):
        self.counts.sent += buf.nbytes
        self.counts.messages += 1
        return self.inner.isend(buf, dest)
