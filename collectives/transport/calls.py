"""Who-called-what, carried by every message of a collective.

The Communicator tells the transport which collective starts (`begin_call(sequence,
signature)`). The transport puts a call tag on every message it sends: the low bits of
the sequence number and a hash of the signature. A receive accepts any tag and compares
the one that came with what this rank called before the bytes are used, so a rank that
called something else (another op, dtype, count, root or algorithm, or another call
altogether) is named at once instead of producing a silent wrong answer. A tag fits an
MPI tag (MPICH allows 29 bits; the MPI standard guarantees 15), and costs one integer
comparison per received message.

`CallTags` is what a transport keeps; shared-memory flags can carry the same tag.
"""
import zlib

from ..errors import CollectiveMismatch
from .contract import CallState

SEQUENCE_BITS = 10      # a rank 1024 calls ahead aliases; one call ahead never does


def signature_hash(signature):
    """A hash of a call signature that every rank computes alike (Python's hash() of a
    string differs between processes)."""
    return zlib.crc32(repr(signature).encode())


class CallTags:
    """The tag of the call in progress on one transport, for tags of `bits` bits.

    `tag` is 0 before the first call (object exchanges made outside collectives, such as
    split, carry the tag of the last call, alike on every rank that called alike).
    """

    def __init__(self, bits=29):
        self.sequence_bits = min(SEQUENCE_BITS, max(1, bits // 3))
        self.hash_bits = bits - self.sequence_bits
        self._sequence_mask = (1 << self.sequence_bits) - 1
        self._hash_mask = (1 << self.hash_bits) - 1
        self.tag = 0
        self.call = None
        self._cache = {}
        self._last = (None, 0)         # (signature, its digest) of the last call

    def begin(self, sequence, signature):
        """Make (sequence, signature) the call in progress; returns that pair. Per call: an
        identity test when the signature object is the last call's (the Communicator hands
        the same one for the same call), else one dict lookup."""
        last, digest = self._last
        if signature is not last:
            digest = self._cache.get(signature)
            if digest is None:
                digest = self._digest(signature)
            self._last = (signature, digest)
        self.call = call = (sequence, signature)
        self.tag = ((sequence & self._sequence_mask) << self.hash_bits) | digest
        return call

    def _digest(self, signature):
        if len(self._cache) > 1024:
            self._cache.clear()
        digest = self._cache[signature] = signature_hash(signature) & self._hash_mask
        return digest

    def tag_of(self, sequence, signature):
        """The tag a rank in call (sequence, signature) puts on its messages."""
        return ((sequence & self._sequence_mask) << self.hash_bits) | (signature_hash(signature) & self._hash_mask)

    def sender_sequence(self, tag):
        """The sender's sequence number, from its tag: the one nearest this rank's."""
        modulus = 1 << self.sequence_bits
        mine = self.call[0] if self.call else 0
        delta = ((tag >> self.hash_bits) - mine) % modulus
        return mine + (delta if delta < modulus // 2 else delta - modulus)

    def mismatch(self, rank, peer, tag):
        """The CollectiveMismatch for a message from `peer` tagged `tag` (not ours)."""
        sequence, signature = self.call or (0, None)
        theirs = self.sender_sequence(tag)
        message = (f"rank {rank}: {_name(signature)} #{sequence} received a message from rank {peer} "
                   f"that rank {peer} sent in its call #{theirs}, which was called differently "
                   f"(call tag {tag:#x}, expected {self.tag:#x})")
        return CollectiveMismatch(message, rank=rank, peer=peer, sequence=sequence, signature=signature,
                                  peer_sequence=theirs, peer_tag=tag, tags=self)


class TaggedCallState(CallState):
    """CallState for a transport that tags its messages with `self.tags` (a CallTags) and
    may declare a shared segment in `self.capabilities`."""

    def begin_call(self, sequence, signature):
        """As CallState's; the call's tag goes with every message, and the segment's flags
        carry the call from now on."""
        self.step = 0
        self.call = self.tags.begin(sequence, signature)
        segment = self.capabilities.shared_segment
        if segment is not None:
            segment.begin_call(sequence, signature, self.tags)


def _name(signature):
    return "call" if not signature else str(signature[0])
