"""Tensor-parallel layers on device arrays give what they give on NumPy arrays.

Every test runs twice: on real CuPy (skipped without CuPy and a GPU) and on the NumPy-backed
CuPy stand-in of tests/cupy_standin.py (two fake GPUs, deferred streams, arrays that refuse
implicit conversion to NumPy as CuPy does), so the layers' array handling, the collectives'
device path and the kernels' indexing are exercised on any machine. Rank r uses device
r mod the device count. Results are compared with the same layers on NumPy arrays.
"""
import numpy as np
import pytest

import collectives as cc
import nn
from nn import functional as F
from nn.parallel import (
    ColumnParallelLinear,
    DistributedDataParallel,
    ParallelGPT,
    ParallelMLP,
    ProcessGrid,
    RowParallelLinear,
    gather_from_parallel_region,
    scatter_to_parallel_region,
)
from tests import cupy_standin

RTOL, ATOL = 1e-9, 1e-12


@pytest.fixture(params=["standin", "cupy"])
def xp(request, monkeypatch, tmp_path_factory):
    """The device array module: the stand-in, or real CuPy where a GPU is present."""
    if request.param == "cupy":
        cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install '.[gpu]')")
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as error:
            pytest.skip(f"no CUDA device: {error}")
        yield cupy
        return
    if cupy_standin.GXX is None:
        pytest.skip("g++ is not installed (the stand-in builds the kernels with it)")
    yield cupy_standin.install(monkeypatch, tmp_path_factory.getbasetemp(), devices=2)
    cupy_standin.clear_caches()


def on_device(xp, comm):
    """Make device (rank mod device count) current for this rank's thread."""
    xp.cuda.Device(comm.rank % xp.cuda.runtime.getDeviceCount()).use()


def host(array):
    return array.get() if not isinstance(array, np.ndarray) else array.copy()


def run_both(xp, body, size=2):
    """body(comm, to_array) -> a list of arrays, run on NumPy arrays and on device arrays;
    returns (cpu results, device results) per rank, all copied to the host by the rank's
    own thread (whose stream holds the queued device work)."""
    def on(device):
        def rank_body(comm):
            if device:
                on_device(xp, comm)
            arrays = body(comm, xp.asarray if device else np.asarray)
            if device:          # (the stand-in gives reductions to one number as host scalars)
                assert all(isinstance(a, xp.ndarray) or np.ndim(a) == 0 for a in arrays), [type(a) for a in arrays]
            return [host(a) for a in arrays]
        return cc.run_threads(size, rank_body, timeout=60)
    return on(False), on(True)


def assert_same(cpu, device):
    assert len(cpu) == len(device)
    for a, b in zip(cpu, device):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)


def test_parallel_mlp_forward_and_backward_match_numpy(xp):
    rng = np.random.default_rng(1)
    x, weights = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))

    def body(comm, to_array):
        nn.manual_seed(3)
        model = ParallelMLP(6, 10, comm, activation="gelu_tanh", dtype=np.float64)   # 10: uneven shards
        for p in model.parameters():
            p.data = to_array(p.data)
        xt = nn.Tensor(to_array(x), requires_grad=True)
        out = model(xt)
        (out * nn.Tensor(to_array(weights))).sum().backward()
        return [out.data, xt.grad] + [t for p in model.parameters() for t in (p.data, p.grad)]
    cpu, device = run_both(xp, body)
    for rank in range(2):
        assert_same(cpu[rank], device[rank])


def test_gather_and_scatter_regions_on_device_arrays(xp):
    def body(comm, to_array):
        local = nn.Tensor(to_array(np.full((2, 3), float(comm.rank))), requires_grad=True)
        gathered = gather_from_parallel_region(local, comm)
        (gathered * nn.Tensor(to_array(np.arange(3.0 * comm.size)))).sum().backward()
        full = nn.Tensor(to_array(np.arange(12.0).reshape(2, 6)), requires_grad=True)
        mine = scatter_to_parallel_region(full, comm)
        (mine * 2).sum().backward()
        return [gathered.data, local.grad, mine.data, full.grad]
    cpu, device = run_both(xp, body)
    for rank in range(2):
        assert_same(cpu[rank], device[rank])


def test_from_linear_shards_a_layer_whose_weights_live_on_the_device(xp):
    nn.manual_seed(5)
    linear = nn.Linear(6, 4, dtype=np.float64)
    weight, bias = linear.weight.data.copy(), linear.bias.data.copy()
    x = np.random.default_rng(2).standard_normal((3, 6))

    def body(comm, to_array):
        linear = nn.Linear(6, 4, dtype=np.float64)              # each rank its own, on its device
        linear.weight.data, linear.bias.data = to_array(weight), to_array(bias)
        column = ColumnParallelLinear.from_linear(linear, comm, gather_output=True)
        row = RowParallelLinear.from_linear(linear, comm, input_is_parallel=False)
        assert type(column.weight.data) is type(linear.weight.data)       # sharded where it lives
        return [column(nn.Tensor(to_array(x))).data, row(nn.Tensor(to_array(x))).data]
    cpu, device = run_both(xp, body)
    for rank in range(2):
        assert_same(cpu[rank], device[rank])


def test_hybrid_data_and_tensor_parallel_training_on_device_matches_numpy(xp):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)

    def body(comm, to_array):
        grid = ProcessGrid(comm, tp=2)
        nn.manual_seed(9)
        model = nn.Sequential(ColumnParallelLinear(6, 10, grid.tp, dtype=np.float64), nn.Tanh(),
                              RowParallelLinear(10, 3, grid.tp, dtype=np.float64))
        for p in model.parameters():
            p.data = to_array(p.data)
        model = DistributedDataParallel(model, grid.dp)
        optimizer = nn.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        for step in range(3):
            rows = slice(8 * step // 2 + 4 * grid.dp_rank, 8 * step // 2 + 4 * grid.dp_rank + 4)
            optimizer.zero_grad()
            F.cross_entropy(model(nn.Tensor(to_array(x[rows]))), to_array(y[rows])).backward()
            optimizer.step()
        return [p.data for p in model.parameters()]
    cpu, device = run_both(xp, body, size=4)
    for rank in range(4):
        assert_same(cpu[rank], device[rank])


@pytest.mark.parametrize("sequence_parallel", [False, True])
def test_parallel_gpt_forward_and_backward_on_device_match_numpy(xp, sequence_parallel):
    config = nn.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=3, n_embd=12,
                          activation="gelu_tanh", dtype="float64")
    rng = np.random.default_rng(6)
    idx, targets = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))

    def body(comm, to_array):
        nn.manual_seed(2)
        full = nn.GPT(config)
        for p in full.parameters():
            p.data = to_array(p.data)
        model = ParallelGPT.from_gpt(full, comm, sequence_parallel=sequence_parallel)
        loss = model(idx, targets)
        loss.backward()
        return [loss.data] + [p.grad for p in model.parameters()]
    cpu, device = run_both(xp, body)
    for rank in range(2):
        assert_same(cpu[rank], device[rank])
