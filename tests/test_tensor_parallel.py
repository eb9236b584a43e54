"""Tensor parallelism: sharded layers equal the unsharded ones (float64, relative 1e-9),
the conjugate operators, and hybrid data x tensor parallel training."""
import numpy as np
import pytest

import collectives as cc
import nn
from nn import functional as F
from nn.parallel import (
    ColumnParallelLinear,
    DistributedDataParallel,
    DistributedSampler,
    ParallelMLP,
    ProcessGrid,
    RowParallelLinear,
    gather_from_parallel_region,
    scatter_to_parallel_region,
    unsharded_mlp,
)

RTOL = 1e-9


def reference_mlp(dim, hidden, x, weights, seed=3, activation="gelu"):
    nn.manual_seed(seed)
    model = unsharded_mlp(dim, hidden, activation, dtype=np.float64)
    xt = nn.Tensor(x.copy(), requires_grad=True)
    out = model(xt)
    (out * nn.Tensor(weights)).sum().backward()
    return model, out.data, xt.grad


def sharded_mlp(comm, dim, hidden, x, weights, seed=3, activation="gelu"):
    nn.manual_seed(seed)
    model = ParallelMLP(dim, hidden, comm, activation, dtype=np.float64)
    xt = nn.Tensor(x.copy(), requires_grad=True)
    out = model(xt)
    (out * nn.Tensor(weights)).sum().backward()
    return {"out": out.data, "x_grad": xt.grad, "rank": comm.rank, "size": comm.size,
            **{name: (p.data.copy(), p.grad.copy()) for name, p in model.named_parameters()}}


def compare(shard, full_model, full_out, full_x_grad, hidden):
    np.testing.assert_allclose(shard["out"], full_out, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(shard["x_grad"], full_x_grad, rtol=RTOL, atol=1e-12)
    offsets = cc.partition(hidden, shard["size"])
    rows = slice(offsets[shard["rank"]], offsets[shard["rank"] + 1])
    fc1, fc2 = full_model[0], full_model[2]
    pairs = {"fc1.weight": (fc1.weight, np.s_[rows]), "fc1.bias": (fc1.bias, np.s_[rows]),
             "fc2.weight": (fc2.weight, np.s_[:, rows]), "fc2.bias": (fc2.bias, np.s_[:])}
    for name, (full, index) in pairs.items():
        data, grad = shard[name]
        assert np.array_equal(data, full.data[index]), f"{name}: initial slice differs"
        np.testing.assert_allclose(grad, full.grad[index], rtol=RTOL, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("hidden", [16, 10])          # 10 does not divide by 4: uneven shards
def test_parallel_mlp_equals_the_unsharded_mlp(tp, hidden):
    rng = np.random.default_rng(0)
    dim = 6
    x, weights = rng.standard_normal((5, dim)), rng.standard_normal((5, dim))
    full = reference_mlp(dim, hidden, x, weights)
    for shard in cc.run_threads(tp, sharded_mlp, dim, hidden, x, weights):
        compare(shard, *full, hidden)


def test_parallel_mlp_on_split_communicators():
    rng = np.random.default_rng(1)
    x, weights = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    full = reference_mlp(4, 8, x, weights, activation="tanh")

    def body(comm):
        sub = comm.split(comm.rank % 2, key=comm.rank)          # two tp groups of 2: {0, 2} and {1, 3}
        return sharded_mlp(sub, 4, 8, x, weights, activation="tanh")
    for shard in cc.run_threads(4, body):
        compare(shard, *full, 8)


def test_gather_and_scatter_are_conjugate():
    def body(comm):
        local = nn.Tensor(np.full((2, 3), float(comm.rank)), requires_grad=True)
        gathered = gather_from_parallel_region(local, comm)           # (2, 3 * size)
        (gathered * nn.Tensor(np.arange(3.0 * comm.size))).sum().backward()
        full = nn.Tensor(np.arange(12.0).reshape(2, 6), requires_grad=True)
        mine = scatter_to_parallel_region(full, comm)
        (mine * 2).sum().backward()
        return gathered.data, local.grad, mine.data, full.grad
    for rank, (gathered, local_grad, mine, full_grad) in enumerate(cc.run_threads(2, body)):
        assert np.array_equal(gathered[0], [0, 0, 0, 1, 1, 1])
        assert np.array_equal(local_grad[0], np.arange(3.0) + 3 * rank)
        assert np.array_equal(mine, np.arange(12.0).reshape(2, 6)[:, 3 * rank:3 * rank + 3])
        assert full_grad.sum() == 2 * 12          # the all-gathered gradient: every slice got 2


def test_from_linear_shards_an_existing_layer():
    nn.manual_seed(5)
    linear = nn.Linear(6, 4, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((3, 6))
    expected = linear(nn.Tensor(x)).data

    def body(comm):
        column = ColumnParallelLinear.from_linear(linear, comm, gather_output=True)
        row = RowParallelLinear.from_linear(linear, comm, input_is_parallel=False)
        return column(nn.Tensor(x)).data, row(nn.Tensor(x)).data
    for column_out, row_out in cc.run_threads(2, body):
        np.testing.assert_allclose(column_out, expected, rtol=RTOL)
        np.testing.assert_allclose(row_out, expected, rtol=RTOL)


def test_uneven_gather_is_refused_at_construction():
    def body(comm):
        with pytest.raises(ValueError, match="divisible"):
            ColumnParallelLinear(4, 10, comm, gather_output=True)
    cc.run_threads(4, body)


def test_process_grid_groups():
    def body(comm):
        grid = ProcessGrid(comm, tp=2)
        tp_members = grid.tp.allgather(np.array([comm.rank])).tolist()
        dp_members = grid.dp.allgather(np.array([comm.rank])).tolist()
        return tp_members, dp_members
    results = cc.run_threads(4, body)
    assert results[0] == ([0, 1], [0, 2]) and results[3] == ([2, 3], [1, 3])
    with pytest.raises(ValueError, match="divisor"):
        cc.run_threads(3, lambda comm: ProcessGrid(comm, tp=2))


def test_hybrid_data_and_tensor_parallel_training_equals_single_process():
    rng = np.random.default_rng(4)
    n, steps, global_batch = 64, 8, 8
    x, y = rng.standard_normal((n, 6)), rng.integers(0, 3, n)

    def make_full():
        nn.manual_seed(9)
        return nn.Sequential(nn.Linear(6, 10, dtype=np.float64), nn.Tanh(), nn.Linear(10, 3, dtype=np.float64))

    full = make_full()
    optimizer = nn.optim.SGD(full.parameters(), lr=0.2, momentum=0.9)
    order = np.random.default_rng([0, 0]).permutation(n)
    for step in range(steps):
        idx = order[step * global_batch:(step + 1) * global_batch]
        optimizer.zero_grad()
        F.cross_entropy(full(nn.Tensor(x[idx])), y[idx]).backward()
        optimizer.step()

    def body(comm):
        grid = ProcessGrid(comm, tp=2)
        nn.manual_seed(9)
        model = nn.Sequential(ColumnParallelLinear(6, 10, grid.tp, dtype=np.float64), nn.Tanh(),
                              RowParallelLinear(10, 3, grid.tp, dtype=np.float64))
        model = DistributedDataParallel(model, grid.dp)
        opt = nn.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        batches = DistributedSampler(n, grid.dp, seed=0).batches(global_batch // grid.dp_size)
        for _ in range(steps):
            idx = next(batches)
            opt.zero_grad()
            F.cross_entropy(model(nn.Tensor(x[idx])), y[idx]).backward()
            opt.step()
        return grid.tp_rank, {k: v.copy() for k, v in model.module.state_dict().items()}

    for tp_rank, state in cc.run_threads(4, body, timeout=30):
        rows = slice(5 * tp_rank, 5 * tp_rank + 5)
        np.testing.assert_allclose(state["0.weight"], full[0].weight.data[rows], rtol=RTOL)
        np.testing.assert_allclose(state["0.bias"], full[0].bias.data[rows], rtol=RTOL)
        np.testing.assert_allclose(state["2.weight"], full[2].weight.data[:, rows], rtol=RTOL)
        np.testing.assert_allclose(state["2.bias"], full[2].bias.data, rtol=RTOL)
