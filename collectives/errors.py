"""The errors the engine raises beyond plain TypeError/ValueError for bad arguments."""


class CollectiveMismatch(ValueError):
    """Ranks called one collective with different arguments, or different collectives.

    Raised, with debug mode off, by every rank that received a message its sender sent
    in a call other than its own (the transport compares the call tag every message
    carries), and in debug mode by every rank before any data moves. Attributes (None
    where unknown): `rank` (this rank), `peer` (the rank that called differently),
    `sequence` and `signature` (this rank's call), `peer_sequence`, `peer_signature` (the
    peer's, where it could be recovered) and `peer_tag`.
    """

    def __init__(self, message, rank=None, peer=None, sequence=None, signature=None,
                 peer_sequence=None, peer_tag=None, peer_signature=None, tags=None):
        super().__init__(message)
        self.rank, self.peer, self.sequence, self.signature = rank, peer, sequence, signature
        self.peer_sequence, self.peer_tag, self.peer_signature = peer_sequence, peer_tag, peer_signature
        self.tags = tags        # the receiving transport's CallTags (to recover the peer's call)


class TransportError(RuntimeError):
    """A point-to-point operation failed (a mismatched message, a broken peer)."""


class MessageError(TransportError):
    """The transport's library reported a failed message (MPI: a message longer than the
    receive posted for it, a broken peer). Raised by the transport in place of the
    library's own exception; the Communicator adds the flight records' summary."""


class TransportTimeout(TransportError):
    """A point-to-point wait ran past the timeout.

    Attributes: `peer` (the rank waited for), `what` ("receive from" or "send to"),
    `waited` (seconds), `step` (the transport's wait count inside the current collective).
    """

    def __init__(self, message, peer=None, what=None, waited=None, step=None):
        super().__init__(message)
        self.peer, self.what, self.waited, self.step = peer, what, waited, step


class CollectiveTimeout(RuntimeError):
    """A collective did not complete within the communicator's timeout.

    Raised on every rank still alive that was inside the stuck collective. The message
    names the collective (name, sequence number, algorithm, count, dtype), the step, the
    peer it was waiting for, and, where other ranks' flight records could be read, which
    ranks never entered the call. Attributes: `collective` (the flight-record entry),
    `peer`, `step`, `summary`. The communicator is not usable after this error.
    """

    def __init__(self, message, collective=None, peer=None, step=None, summary=None):
        super().__init__(message)
        self.collective, self.peer, self.step, self.summary = collective, peer, step, summary
