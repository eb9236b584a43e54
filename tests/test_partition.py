import numpy as np
import pytest

import collectives as cc


@pytest.mark.parametrize("count", [0, 1, 2, 7, 13, 100, 1001])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 16])
def test_partition_cuts_like_numpy_array_split(count, size):
    offsets = cc.partition(count, size)
    assert len(offsets) == size + 1 and offsets[0] == 0 and offsets[-1] == count
    pieces = np.array_split(np.arange(count), size)
    assert [offsets[i + 1] - offsets[i] for i in range(size)] == [len(p) for p in pieces]


@pytest.mark.parametrize("count, size", [(-1, 2), (3, 0), (2.5, 2), (3, -1)])
def test_partition_rejects_bad_arguments(count, size):
    with pytest.raises(ValueError):
        cc.partition(count, size)


@pytest.mark.parametrize("count", [0, 1, 5, 64, 1001])
@pytest.mark.parametrize("chunks", [0, 1, 3, 8, 5000])
def test_pipeline_chunks_cut_like_partition_with_at_least_one_element_each(count, chunks):
    from collectives.partition import chunk_bounds
    bounds = chunk_bounds(count, chunks)
    assert bounds[0] == 0 and bounds[-1] == count
    assert len(bounds) - 1 == (max(1, min(chunks, count)) if count else 1)
    assert bounds == cc.partition(count, len(bounds) - 1)
    assert count == 0 or all(b > a for a, b in zip(bounds, bounds[1:]))


@pytest.mark.parametrize("n", range(1, 70))
def test_largest_power_of_two(n):
    from collectives.partition import largest_power_of_two
    p = largest_power_of_two(n)
    assert p <= n < 2 * p and p & (p - 1) == 0
