"""Where PyTorch happens to be installed: the same model, weights and batch give the same
loss and gradients to float64 rounding, and state_dicts move across with no renaming."""
import numpy as np
import pytest

import nn
from nn import functional as F

torch = pytest.importorskip("torch")


def models(seed=0):
    nn.manual_seed(seed)
    ours = nn.Sequential(nn.Linear(6, 8, dtype=np.float64), nn.GELU(), nn.LayerNorm(8, dtype=np.float64),
                         nn.Linear(8, 8, dtype=np.float64), nn.Tanh(), nn.Linear(8, 4, dtype=np.float64))
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.LayerNorm(8),
                                 torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    return ours, theirs


def test_loss_and_gradients_match_pytorch():
    ours, theirs = models()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 6)), rng.integers(0, 4, 10)
    loss = F.cross_entropy(ours(nn.Tensor(x)), y)
    loss.backward()
    reference = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
    reference.backward()
    assert abs(loss.item() - reference.item()) < 1e-12
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("make", [
    lambda ps: (nn.optim.SGD(ps[0], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                torch.optim.SGD(ps[1], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    lambda ps: (nn.optim.Adam(ps[0], lr=0.01, weight_decay=0.1), torch.optim.Adam(ps[1], lr=0.01, weight_decay=0.1)),
    lambda ps: (nn.optim.AdamW(ps[0], lr=0.01), torch.optim.AdamW(ps[1], lr=0.01)),
])
def test_optimizers_match_pytorch(make):
    ours, theirs = models(1)
    ours_opt, theirs_opt = make((ours.parameters(), theirs.parameters()))
    rng = np.random.default_rng(1)
    for _ in range(5):
        x, y = rng.standard_normal((10, 6)), rng.integers(0, 4, 10)
        ours_opt.zero_grad()
        F.cross_entropy(ours(nn.Tensor(x)), y).backward()
        ours_opt.step()
        theirs_opt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        theirs_opt.step()
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, theirs.state_dict()[name].numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_state_dicts_move_both_ways_without_renaming():
    ours, theirs = models(2)
    torch.manual_seed(0)
    fresh = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.LayerNorm(8),
                                torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double()
    ours.load_state_dict(fresh.state_dict())                        # PyTorch tensors straight in
    for name, value in fresh.state_dict().items():
        assert np.array_equal(ours.state_dict()[name], value.numpy()), name
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})


OPS = {
    "softmax": (lambda t: F.softmax(t, axis=1), lambda t: torch.softmax(t, dim=1)),
    "log_softmax": (lambda t: F.log_softmax(t, axis=0), lambda t: torch.log_softmax(t, dim=0)),
    "gelu": (lambda t: F.gelu(t), lambda t: torch.nn.functional.gelu(t)),
    "gelu tanh": (lambda t: F.gelu(t, "tanh"), lambda t: torch.nn.functional.gelu(t, approximate="tanh")),
    "sigmoid tanh relu": (lambda t: t.sigmoid() * t.tanh() + t.relu(), lambda t: t.sigmoid() * t.tanh() + t.relu()),
    "max over an axis": (lambda t: t.max(axis=1), lambda t: t.amax(dim=1)),
    "mean keepdims": (lambda t: t.mean(axis=0, keepdims=True), lambda t: t.mean(dim=0, keepdim=True)),
    "broadcast divide": (lambda t: t / (t[:1] ** 2 + 1), lambda t: t / (t[:1] ** 2 + 1)),
    "batched matmul": (lambda t: t.reshape(2, 2, 3) @ t.reshape(2, 3, 2),
                       lambda t: t.reshape(2, 2, 3) @ t.reshape(2, 3, 2)),
    "layer_norm": (lambda t: F.layer_norm(t, (3,)), lambda t: torch.nn.functional.layer_norm(t, (3,))),
    "nll_loss": (lambda t: F.nll_loss(F.log_softmax(t), np.array([0, 2, 1, 1])),
                 lambda t: torch.nn.functional.nll_loss(torch.log_softmax(t, dim=1), torch.tensor([0, 2, 1, 1]))),
    "mse_loss": (lambda t: F.mse_loss(t, t.data[::-1].copy()),
                 lambda t: torch.nn.functional.mse_loss(t, t.detach().flip(0))),
}


@pytest.mark.parametrize("name", OPS)
def test_ops_match_pytorch(name):
    ours_fn, theirs_fn = OPS[name]
    x = np.random.default_rng(3).standard_normal((4, 3))
    mine = nn.Tensor(x.copy(), requires_grad=True)
    out = ours_fn(mine)
    weights = np.random.default_rng(4).standard_normal(out.shape)
    (out * nn.Tensor(weights)).sum().backward()
    theirs = torch.from_numpy(x.copy()).requires_grad_()
    reference = theirs_fn(theirs)
    (reference * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(out.data, reference.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)
