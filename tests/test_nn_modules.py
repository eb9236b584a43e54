"""Modules, state dicts, optimizers' update formulas, and a training run."""
import math

import numpy as np
import pytest

import nn
from nn import functional as F
from tests.gradcheck import check_gradients


def test_sequential_names_indexing_and_length():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight"]
    assert len(model) == 3 and isinstance(model[2], nn.Linear) and model[0].weight.shape == (4, 3)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight"]


def test_linear_init_follows_pytorch_bounds_and_seed():
    nn.manual_seed(7)
    a = nn.Linear(100, 50)
    nn.manual_seed(7)
    b = nn.Linear(100, 50)
    assert np.array_equal(a.weight.data, b.weight.data) and a.weight.dtype == np.float32
    bound = 1 / math.sqrt(100)
    assert np.abs(a.weight.data).max() <= bound and np.abs(a.bias.data).max() <= bound
    assert np.abs(a.weight.data).max() > 0.9 * bound


def swapped(module, name, tensor):
    """Call `module` with parameter `name` temporarily replaced by `tensor`."""
    *path, leaf = name.split(".")
    owner = module
    for part in path:
        owner = owner._modules[part]
    original = owner._parameters[leaf]

    def call(x):
        object.__setattr__(owner, leaf, tensor)
        try:
            return module(x)
        finally:
            object.__setattr__(owner, leaf, original)
    return call


@pytest.mark.parametrize("module", [
    lambda: nn.Linear(3, 2, dtype=np.float64),
    lambda: nn.LayerNorm(3, dtype=np.float64),
    lambda: nn.Sequential(nn.Linear(3, 4, dtype=np.float64), nn.GELU("tanh"), nn.Linear(4, 3, dtype=np.float64)),
])
def test_module_gradients_match_finite_differences(module):
    nn.manual_seed(0)
    m = module()
    rng = np.random.default_rng(1)
    for p in m.parameters():
        p.data = p.data + rng.standard_normal(p.shape) * 0.1     # break LayerNorm's symmetry
    x = rng.standard_normal((4, 3))
    check_gradients(lambda t: m(t), x)                           # with respect to the input
    for name, p in m.named_parameters():                         # and to every parameter
        check_gradients(lambda w, name=name: swapped(m, name, w)(nn.Tensor(x)), p.data.copy())


def test_state_dict_round_trip_and_errors():
    nn.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    nn.manual_seed(1)
    b = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with pytest.raises(KeyError, match=r"missing keys \['1.bias'\]"):
        b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "1.bias"})
    with pytest.raises(KeyError, match=r"unexpected keys \['2.weight'\]"):
        b.load_state_dict(dict(a.state_dict(), **{"2.weight": np.zeros(1)}))
    with pytest.raises(ValueError, match=r"0.weight: checkpoint \(4, 4\) vs model \(4, 3\)"):
        b.load_state_dict(dict(a.state_dict(), **{"0.weight": np.zeros((4, 4))}))


def test_dropout_and_train_eval():
    nn.manual_seed(0)
    layer = nn.Dropout(0.5)
    x = nn.Tensor(np.ones((100, 100)))
    y = layer(x).data
    assert set(np.unique(y)) == {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    layer.eval()
    assert layer(x) is x


def reference_sgd(p, g, buf, lr, momentum, dampening, wd, nesterov, first):
    g = g + wd * p
    if momentum:
        buf = g.copy() if first else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


@pytest.mark.parametrize("momentum, dampening, wd, nesterov", [
    (0.0, 0.0, 0.0, False), (0.9, 0.0, 0.0, False), (0.9, 0.1, 0.01, False), (0.9, 0.0, 0.05, True)])
def test_sgd_follows_the_update_formula(momentum, dampening, wd, nesterov):
    rng = np.random.default_rng(0)
    p = nn.Parameter(rng.standard_normal(5))
    optimizer = nn.optim.SGD([p], lr=0.1, momentum=momentum, dampening=dampening,
                             weight_decay=wd, nesterov=nesterov)
    expected, buf = p.data.copy(), None
    for step in range(4):
        g = rng.standard_normal(5)
        p.grad = g.copy()
        optimizer.step()
        expected, buf = reference_sgd(expected, g, buf, 0.1, momentum, dampening, wd, nesterov, step == 0)
        np.testing.assert_allclose(p.data, expected, rtol=1e-12)


@pytest.mark.parametrize("cls, wd", [(nn.optim.Adam, 0.0), (nn.optim.Adam, 0.1), (nn.optim.AdamW, 0.1)])
def test_adam_follows_the_update_formula(cls, wd):
    rng = np.random.default_rng(0)
    p = nn.Parameter(rng.standard_normal(5))
    optimizer = cls([p], lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=wd)
    expected, m, v = p.data.copy(), np.zeros(5), np.zeros(5)
    for t in range(1, 5):
        g = rng.standard_normal(5)
        p.grad = g.copy()
        optimizer.step()
        if cls is nn.optim.AdamW:
            expected = expected * (1 - 0.01 * wd)
        else:
            g = g + wd * expected
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        expected = expected - 0.01 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-6)
        np.testing.assert_allclose(p.data, expected, rtol=1e-10)


def test_optimizer_state_dict_round_trip():
    rng = np.random.default_rng(0)
    a = nn.Parameter(rng.standard_normal(3))
    opt = nn.optim.Adam([a], lr=0.1)
    a.grad = np.ones(3)
    opt.step()
    b = nn.Parameter(a.data.copy())
    opt2 = nn.optim.Adam([b], lr=0.5)
    opt2.load_state_dict(opt.state_dict())
    for p, o in ((a, opt), (b, opt2)):
        p.grad = np.full(3, 0.5)
        o.step()
    assert np.array_equal(a.data, b.data) and opt2.param_groups[0]["lr"] == 0.1


def test_training_lowers_the_loss():
    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = nn.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(nn.Tensor(x.astype(np.float32))), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
