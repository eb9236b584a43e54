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
