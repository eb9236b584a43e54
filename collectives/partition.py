"""How a buffer of `count` elements is cut into blocks, one per rank."""
from .arguments import as_int


def partition(count, size):
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


def block(buf, offsets, i):
    """View of block i of `buf` under `offsets` (no copy)."""
    return buf[offsets[i]:offsets[i + 1]]
