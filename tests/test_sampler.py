import numpy as np
import pytest

import collectives as cc
from nn.parallel.sampler import DistributedSampler


def samplers(n, num_samples, **kwargs):
    return [DistributedSampler(num_samples, comm, **kwargs)
            for comm in cc.run_threads(n, lambda comm: comm)]


@pytest.mark.parametrize("num_samples", [0, 1, 10, 13, 100])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_equal_disjoint_and_cover_the_epoch(num_samples, drop_last):
    shards = [list(s) for s in samplers(4, num_samples, drop_last=drop_last)]
    assert len({len(s) for s in shards}) == 1
    flat = [i for s in shards for i in s]
    if drop_last:
        assert len(set(flat)) == len(flat) == num_samples // 4 * 4
    else:
        assert set(flat) == set(range(num_samples)) and len(flat) == -(-num_samples // 4) * 4


def test_fewer_samples_than_ranks_are_padded_by_repeating():
    shards = [list(s) for s in samplers(4, 3, shuffle=False)]
    assert shards == [[0], [1], [2], [0]]


def test_union_of_local_batches_is_the_global_batch():
    local = [list(s.batches(3)) for s in samplers(4, 24, seed=5)]
    global_order = samplers(1, 24, seed=5)[0].permutation()
    for k in range(2):
        union = sorted(np.concatenate([local[r][k] for r in range(4)]))
        assert union == sorted(global_order[k * 12:(k + 1) * 12])


def test_epochs_differ_and_are_reproducible():
    a, b = samplers(2, 50, seed=1)[0], samplers(2, 50, seed=1)[0]
    first = a.indices().tolist()
    a.set_epoch(1)
    assert a.indices().tolist() != first
    b.set_epoch(1)
    assert a.indices().tolist() == b.indices().tolist()
    assert samplers(2, 50, shuffle=False)[1].indices().tolist() == list(range(1, 50, 2))


def test_state_dict_resumes_with_the_next_unseen_batch():
    sampler = samplers(2, 40, seed=3)[0]
    sampler.set_epoch(2)
    batches = sampler.batches(4)
    seen = [next(batches), next(batches)]
    state = sampler.state_dict()
    resumed = samplers(2, 40, seed=3)[0]
    resumed.load_state_dict(state)
    rest = list(resumed.batches(4))
    full = samplers(2, 40, seed=3)[0]
    full.set_epoch(2)
    assert np.array_equal(np.concatenate(seen + rest), np.concatenate(list(full.batches(4))))
    with pytest.raises(ValueError, match="seed"):
        samplers(2, 40, seed=4)[0].load_state_dict(state)
