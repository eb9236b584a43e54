"""Message channels of the in-memory transports (in-process and simulated): one per
ordered pair of ranks of a group, matching receives to sends in posting order."""


class Channel:
    """Messages from one rank to another: the n-th receive posted takes the n-th message
    sent, whichever comes first (the message kind is the transport's own)."""
    __slots__ = ("sent", "posted", "messages")

    def __init__(self):
        self.sent = 0       # messages put so far
        self.posted = 0     # receives posted so far
        self.messages = {}  # ticket (sequence number) -> message not yet taken

    def put(self, message):
        """Enqueue the next message."""
        self.messages[self.sent] = message
        self.sent += 1

    def post(self):
        """Post the next receive; returns its ticket."""
        self.posted += 1
        return self.posted - 1

    def has(self, ticket):
        """Whether the message for `ticket` has arrived (and was not taken yet)."""
        return ticket in self.messages

    def take(self, ticket):
        """Remove and return the message for `ticket` (it must have arrived)."""
        return self.messages.pop(ticket)
