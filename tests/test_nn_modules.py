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


class SeededDropout(nn.Dropout):
    """Dropout whose mask is the same on every call (so finite differences see one function)."""

    def forward(self, x):
        nn.manual_seed(3)
        return super().forward(x)


@pytest.mark.parametrize("module", [
    lambda: nn.Linear(3, 2, dtype=np.float64),
    lambda: nn.Linear(3, 2, bias=False, dtype=np.float64),
    lambda: nn.LayerNorm(3, dtype=np.float64),
    lambda: nn.Sequential(nn.Linear(3, 4, dtype=np.float64), nn.GELU("tanh"), nn.Linear(4, 3, dtype=np.float64)),
    lambda: nn.Sequential(nn.Linear(3, 5, dtype=np.float64), nn.GELU(), nn.Tanh(), nn.Sigmoid(), nn.ReLU(),
                          SeededDropout(0.4), nn.Linear(5, 3, dtype=np.float64)),
], ids=["linear", "linear without bias", "layernorm", "gelu-tanh mlp", "every activation and dropout"])
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


def test_sequential_slices_keep_names_and_ordered_dicts_name_layers():
    from collections import OrderedDict
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert list(model[1:].state_dict()) == ["2.weight", "2.bias"] and model[-1] is model[2]
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(3, 4)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"] and len(named) == 2


def test_nested_modules_use_dotted_names():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(4)
            self.mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))

        def forward(self, x):
            return x + self.mlp(self.norm(x))

    model = Block()
    assert [n for n, _ in model.named_parameters()] == [
        "norm.weight", "norm.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    model.eval()
    assert not model.mlp[1].training and model.train().mlp[1].training


def test_zero_grad_to_zeros_keeps_the_arrays():
    model = nn.Linear(2, 2)
    F.mse_loss(model(nn.Tensor(np.ones((1, 2), np.float32))), np.zeros((1, 2), np.float32)).backward()
    grad = model.weight.grad
    model.zero_grad(set_to_none=False)
    assert model.weight.grad is grad and not grad.any()


def test_linear_parameters_from_a_seed_match_linear_and_shard_by_rows():
    nn.manual_seed(11)
    full = nn.Linear(6, 8)
    weight, bias = nn.init.linear_parameters(6, 8, seed=11)
    assert np.array_equal(weight, full.weight.data) and np.array_equal(bias, full.bias.data)
    again, _ = nn.init.linear_parameters(6, 8, seed=11)
    assert np.array_equal(again[4:8], full.weight.data[4:8])          # a rank's row shard


def test_kaiming_uniform_follows_pytorch_bound():
    t = nn.Tensor(np.zeros((300, 50)))
    nn.init.kaiming_uniform_(t, a=math.sqrt(5))
    bound = 1 / math.sqrt(50)
    assert np.abs(t.data).max() <= bound and np.abs(t.data).max() > 0.95 * bound
    nn.init.zeros_(t)
    assert not t.data.any() and nn.init.ones_(t).data.all()


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


def test_changing_the_learning_rate_in_param_groups_takes_effect():
    p = nn.Parameter(np.zeros(2))
    optimizer = nn.optim.SGD([p], lr=1.0)
    optimizer.param_groups[0]["lr"] = 0.5
    p.grad = np.ones(2)
    optimizer.step()
    assert np.array_equal(p.data, [-0.5, -0.5])


def test_parameter_groups_have_their_own_hyper_parameters():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(2))
    optimizer = nn.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.1}], lr=1.0)
    a.grad, b.grad = np.ones(2), np.ones(2)
    optimizer.step()
    assert np.array_equal(a.data, [-1, -1]) and np.allclose(b.data, [-0.1, -0.1])
    assert [g["params"] for g in optimizer.state_dict()["param_groups"]] == [[0], [1]]


def test_adam_keeps_float32_state_and_parameters():
    p = nn.Parameter(np.ones(4, np.float32))
    optimizer = nn.optim.Adam([p], lr=0.1, weight_decay=0.01)
    for _ in range(3):
        p.grad = np.full(4, 0.5, np.float32)
        optimizer.step()
    state = optimizer.state[0]
    assert p.dtype == state["exp_avg"].dtype == state["exp_avg_sq"].dtype == np.float32


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
    with pytest.raises(ValueError, match="groups of"):
        nn.optim.Adam([a, b]).load_state_dict(opt.state_dict())


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
