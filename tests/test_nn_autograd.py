"""The engine's guarantees that distributed training relies on: accumulation, hooks in
order, the end-of-backward callback, no_grad and custom Functions."""
import numpy as np
import pytest

import nn
from nn import functional as F


def mlp(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6, dtype=np.float64), nn.Tanh(), nn.Linear(6, 5, dtype=np.float64),
                         nn.ReLU(), nn.Linear(5, 3, dtype=np.float64))


def loss_of(model, seed=1):
    rng = np.random.default_rng(seed)
    return F.cross_entropy(model(nn.Tensor(rng.standard_normal((7, 4)))), rng.integers(0, 3, 7))


def test_gradients_accumulate_until_reset():
    model = mlp()
    loss_of(model).backward()
    once = [p.grad.copy() for p in model.parameters()]
    loss_of(model).backward()
    assert all(np.allclose(p.grad, 2 * g) for p, g in zip(model.parameters(), once))
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_a_gradient_shared_by_two_leaves_is_not_aliased():
    a = nn.Tensor(np.ones(3), requires_grad=True)
    b = nn.Tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()
    a.grad += 10                      # must not change b.grad
    assert np.array_equal(b.grad, np.ones(3))


def test_post_accumulate_hooks_fire_once_per_leaf_last_layer_first():
    model = mlp()
    order = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda t, name=name: order.append((name, t.grad is not None)))
    loss_of(model).backward()
    names = [n for n, _ in order]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and all(ok for _, ok in order)
    assert names.index("4.weight") < names.index("2.weight") < names.index("0.weight")


def test_post_accumulate_hook_sees_the_complete_gradient_of_a_reused_weight():
    w = nn.Tensor(np.array([2.0]), requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.copy()))
    x = nn.Tensor(np.array([3.0]))
    (w * x + (w * w) * x).sum().backward()      # d/dw = x + 2wx = 3 + 12
    assert len(seen) == 1 and seen[0][0] == 15.0


def test_register_hook_can_replace_the_gradient_and_be_removed():
    t = nn.Tensor(np.ones(2), requires_grad=True)
    handle = t.register_hook(lambda g: g * 10)
    (t * 3).sum().backward()
    assert np.array_equal(t.grad, [30.0, 30.0])
    handle.remove()
    t.grad = None
    (t * 3).sum().backward()
    assert np.array_equal(t.grad, [3.0, 3.0])


def test_queue_callback_runs_once_after_all_hooks():
    model = mlp()
    events = []

    def hook(p):
        events.append("hook")
        if len(events) == 1:
            nn.queue_callback(lambda: events.append("end"))
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(hook)
    loss_of(model).backward()
    assert events == ["hook"] * 6 + ["end"]
    with pytest.raises(RuntimeError, match="during a backward pass"):
        nn.queue_callback(lambda: None)


def test_no_grad_records_nothing():
    t = nn.Tensor(np.ones(2), requires_grad=True)
    with nn.no_grad():
        y = t * 2
    assert not y.requires_grad and y.is_leaf


def test_unused_branch_does_not_block_gradients():
    a = nn.Tensor(np.ones(2), requires_grad=True)
    b = nn.Tensor(np.ones(2), requires_grad=True)
    unused = a * b                     # shares `a` with the loss but gets no gradient itself
    loss = (a * 3).sum()
    loss.backward()
    assert np.array_equal(a.grad, [3.0, 3.0]) and b.grad is None
    del unused


class Double(nn.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x * factor

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def test_custom_function_forward_and_backward():
    t = nn.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = Double.apply(t, 3.0)
    assert np.array_equal(y.data, [3.0, 6.0])
    y.sum().backward()
    assert np.array_equal(t.grad, [3.0, 3.0])


def test_deep_graphs_do_not_hit_the_recursion_limit():
    t = nn.Tensor(np.ones(1), requires_grad=True)
    y = t
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    assert np.isclose(t.grad[0], 1.0001 ** 5000)
