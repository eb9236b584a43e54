"""How buffers and worlds are cut: blocks per rank, pipeline chunks, and the power of two
at the core of a world (the one home of each of these)."""
from typing import Any

from .arguments import as_int


def partition(count: int, size: int) -> list:
    """Offsets of `size` blocks covering `count` elements: a list of size+1 ints.

    Block i is [offsets[i], offsets[i+1]). The first count % size blocks are one element
    longer than the rest, exactly as numpy.array_split cuts. Blocks may be empty when
    count < size.
    """
    count, size = as_int(count, "count"), as_int(size, "size", low=1)
    base, extra = divmod(count, size)
    offsets = [0] * (size + 1)
    for i in range(size):
        offsets[i + 1] = offsets[i] + base + (1 if i < extra else 0)
    return offsets


def block(buf: Any, offsets: list, i: int) -> Any:
    """View of block i of `buf` under `offsets` (no copy)."""
    return buf[offsets[i]:offsets[i + 1]]


def chunk_bounds(count: int, chunks: int) -> list:
    """Offsets cutting `count` elements into `chunks` nearly equal pipeline chunks: the
    partition convention with the chunk count kept between 1 and count (1 if count is 0)."""
    return partition(count, max(1, min(chunks, count)) if count else 1)


def largest_power_of_two(n: int) -> int:
    """The largest power of two p <= n (n >= 1): the ranks the doubling/halving algorithms
    fold a world onto."""
    return 1 << (n.bit_length() - 1)
