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
