"""DistributedDataParallel on the in-process transport: exactness against one process
training on the whole global batch, for every algorithm and bucket layout."""
import numpy as np
import pytest

import collectives as cc
import nn
from nn import functional as F
from nn.parallel import DistributedDataParallel, DistributedSampler

WORLD, LOCAL_BATCH, STEPS = 4, 6, 20


def build(seed=0, dtype=np.float64):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 24, dtype=dtype), nn.Tanh(), nn.Linear(24, 16, dtype=dtype),
                         nn.ReLU(), nn.Linear(16, 5, dtype=dtype))


def dataset(n=WORLD * LOCAL_BATCH * STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 10)), rng.integers(0, 5, n)


def single_process(steps=STEPS, accumulate=1, lr=0.1):
    x, y = dataset()
    model = build()
    optimizer = nn.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = np.random.default_rng([0, 0]).permutation(len(x))       # the sampler's epoch-0 order
    batch = WORLD * LOCAL_BATCH
    for step in range(steps):
        optimizer.zero_grad()
        for micro in range(accumulate):
            k = step * accumulate + micro
            idx = order[k * batch:(k + 1) * batch]
            (F.cross_entropy(model(nn.Tensor(x[idx])), y[idx]) * (1.0 / accumulate)).backward()
        optimizer.step()
    return model.state_dict()


def data_parallel(comm, steps=STEPS, accumulate=1, lr=0.1, **ddp_options):
    x, y = dataset()
    model = DistributedDataParallel(build(seed=0 if comm.rank == 0 else comm.rank + 7), comm,
                                    **ddp_options)          # rank 0 broadcasts its weights
    optimizer = nn.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sampler = DistributedSampler(len(x), comm, shuffle=True, seed=0)
    batches = sampler.batches(LOCAL_BATCH)
    for _step in range(steps):
        optimizer.zero_grad()
        for micro in range(accumulate):
            idx = next(batches)
            loss = F.cross_entropy(model(nn.Tensor(x[idx])), y[idx]) * (1.0 / accumulate)
            if micro < accumulate - 1:
                with model.no_sync():
                    loss.backward()
            else:
                loss.backward()
        optimizer.step()
    return {k: v.copy() for k, v in model.module.state_dict().items()}


def assert_same_weights(replicas, reference, rtol=1e-9):
    for name, value in reference.items():
        for rank, replica in enumerate(replicas):
            np.testing.assert_allclose(replica[name], value, rtol=rtol, atol=1e-12,
                                       err_msg=f"rank {rank} {name}")
            assert replica[name].tobytes() == replicas[0][name].tobytes(), f"replicas differ: {name}"


REFERENCE = {}


def reference(accumulate=1):
    if accumulate not in REFERENCE:
        REFERENCE[accumulate] = single_process(STEPS // accumulate, accumulate)
    return REFERENCE[accumulate]


@pytest.mark.parametrize("algorithm", ["ring", "tree", "recursive_doubling", "rabenseifner", "oneshot", "twoshot",
                                       "shm_ring"])
@pytest.mark.parametrize("bucket_cap_mb", [25, 0.0005])
@pytest.mark.parametrize("overlap", [True, False])
def test_data_parallel_equals_single_process_training(algorithm, bucket_cap_mb, overlap):
    replicas = cc.run_threads(WORLD, data_parallel, algorithm=algorithm, bucket_cap_mb=bucket_cap_mb,
                              overlap=overlap, timeout=30)
    assert_same_weights(replicas, reference())


def test_no_sync_accumulation_equals_the_big_batch():
    replicas = cc.run_threads(WORLD, data_parallel, steps=STEPS // 2, accumulate=2, timeout=30)
    assert_same_weights(replicas, reference(accumulate=2))


def test_buckets_follow_reverse_registration_order_and_the_cap():
    def body(comm):
        model = DistributedDataParallel(build(), comm, bucket_cap_mb=24 * 16 * 8 / 2 ** 20)
        names = {id(p): name for name, p in model.module.named_parameters()}
        return [[names[id(p)] for p in bucket.params] for bucket in model.buckets]
    buckets = cc.run_threads(2, body)[0]
    assert buckets[0][0] == "4.bias" and buckets[-1][-1] == "0.weight"
    assert ["2.weight"] in buckets                      # exactly at the cap: a bucket of its own


def test_grads_are_views_of_the_bucket_and_averaged():
    def body(comm):
        model = DistributedDataParallel(build(), comm)
        x = np.full((2, 10), comm.rank + 1.0)
        F.mse_loss(model(nn.Tensor(x)), nn.Tensor(np.zeros((2, 5)))).backward()
        p = model.module[0].weight
        bucket = model.buckets[-1]
        return np.shares_memory(p.grad, bucket.flat), p.grad.copy(), model.last_step
    results = cc.run_threads(2, body)
    assert all(shared for shared, _, _ in results)
    assert results[0][1].tobytes() == results[1][1].tobytes()
    assert {"wait", "communication", "hidden"} <= set(results[0][2])


def test_buckets_live_in_the_shared_segment_where_there_is_one():
    def body(comm):
        model = DistributedDataParallel(build(), comm)
        segment = comm.transport.capabilities.shared_segment
        return [segment is not None and segment.offset_in_heap(b.flat) is not None for b in model.buckets]
    assert all(all(flags) for flags in cc.run_threads(2, body))
    assert not any(any(flags) for flags in cc.run_threads(2, body, shm_bytes=0))


def test_parameters_without_gradient_do_not_hang():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2, dtype=np.float64)
            self.b = nn.Linear(3, 2, dtype=np.float64)

        def forward(self, x, use_b):
            return self.b(x) if use_b else self.a(x)

    def body(comm):
        nn.manual_seed(0)
        model = DistributedDataParallel(TwoHeads(), comm, bucket_cap_mb=1e-5)
        model(nn.Tensor(np.ones((1, 3))), use_b=comm.rank == 1).sum().backward()
        return model.module.a.weight.grad.copy(), model.module.b.weight.grad.copy()
    (a0, b0), (a1, b1) = cc.run_threads(2, body, timeout=20)
    assert np.array_equal(a0, a1) and np.array_equal(b0, b1)
    assert np.allclose(a0, 0.5) and np.allclose(b0, 0.5)       # one rank's gradient of ones, averaged


def test_construction_broadcasts_rank_zero_weights():
    def body(comm):
        return DistributedDataParallel(build(seed=comm.rank), comm).module.state_dict()["0.weight"].copy()
    weights = cc.run_threads(3, body)
    assert all(np.array_equal(w, weights[0]) for w in weights)


def test_bad_options():
    def body(comm):
        with pytest.raises(ValueError, match="compression"):
            DistributedDataParallel(build(), comm, compression="int8")
        with pytest.raises(TypeError, match="float32"):
            DistributedDataParallel(build(), comm, compression="fp16")
    cc.run_threads(1, body)


def test_fp16_compression_is_close_to_the_exact_average():
    def body(comm, compression):
        nn.manual_seed(0)
        model = DistributedDataParallel(build(dtype=np.float32), comm, compression=compression,
                                        bucket_cap_mb=0.001)
        x, y = dataset(n=8 * comm.size)
        idx = np.arange(comm.rank * 8, comm.rank * 8 + 8)
        F.cross_entropy(model(nn.Tensor(x[idx].astype(np.float32))), y[idx]).backward()
        return [p.grad.copy() for p in model.module.parameters()]
    exact = cc.run_threads(4, body, None)
    compressed = cc.run_threads(4, body, "fp16")
    for a, b in zip(exact[0], compressed[0]):
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=2e-3, atol=2e-4)
    assert all(np.array_equal(g, h) for g, h in zip(compressed[0], compressed[3]))
