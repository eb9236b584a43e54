"""nn on CuPy arrays gives what it gives on NumPy arrays (skipped without CuPy and a GPU)."""
import numpy as np
import pytest

import nn
from nn import functional as F

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install '.[gpu]')")


def build(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8, dtype=np.float64), nn.GELU(), nn.LayerNorm(8, dtype=np.float64),
                         nn.Linear(8, 3, dtype=np.float64))


def to_gpu(model):
    for p in model.parameters():
        p.data = cupy.asarray(p.data)
    return model


@pytest.mark.parametrize("make_optimizer", [lambda ps: nn.optim.SGD(ps, lr=0.1, momentum=0.9),
                                            lambda ps: nn.optim.AdamW(ps, lr=0.01)])
def test_training_steps_on_the_gpu_match_the_cpu(make_optimizer):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    cpu, gpu = build(), to_gpu(build())
    for model, xs, ys in ((cpu, x, y), (gpu, cupy.asarray(x), cupy.asarray(y))):
        optimizer = make_optimizer(model.parameters())
        for _ in range(3):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(nn.Tensor(xs)), ys)
            loss.backward()
            optimizer.step()
    for name, value in gpu.state_dict().items():
        assert isinstance(value, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(value), cpu.state_dict()[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_indexing_split_and_concatenate_gradients_on_the_gpu():
    data = np.arange(12.0).reshape(3, 4)
    results = []
    for xp in (np, cupy):
        t = nn.Tensor(xp.asarray(data), requires_grad=True)
        a, b = nn.split(t, [1, 3], axis=1)
        picked = t[xp.asarray([0, 2, 2])]
        (nn.concatenate([b, a], axis=1).max(axis=0).sum() + picked.sum() + t.tanh().mean()).backward()
        results.append(cupy.asnumpy(t.grad) if xp is cupy else t.grad)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-12)


def test_state_dict_moves_between_cpu_and_gpu():
    cpu, gpu = build(1), to_gpu(build(2))
    gpu.load_state_dict(cpu.state_dict())
    cpu.load_state_dict(build(3).state_dict())
    cpu.load_state_dict(gpu.state_dict())
    assert all(np.array_equal(v, build(1).state_dict()[k]) for k, v in cpu.state_dict().items())
