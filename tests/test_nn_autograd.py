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


def test_post_accumulate_hook_fires_as_soon_as_final_not_at_the_end():
    model = mlp()
    first_layer_grad_when_last_is_final = []
    model[4].weight.register_post_accumulate_grad_hook(
        lambda t: first_layer_grad_when_last_is_final.append(model[0].weight.grad))
    loss_of(model).backward()
    assert first_layer_grad_when_last_is_final == [None]


def test_post_accumulate_hook_handle_removes_it():
    w = nn.Tensor(np.ones(2), requires_grad=True)
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    (w * 2).sum().backward()
    handle.remove()
    handle.remove()
    (w * 2).sum().backward()
    assert calls == [1]


def test_hooks_need_a_tensor_that_can_get_a_gradient():
    w = nn.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="needs a leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="does not require grad"):
        nn.Tensor(np.ones(2)).register_hook(lambda g: None)


def test_register_hook_on_an_intermediate_sees_its_total_gradient():
    x = nn.Tensor(np.ones(3), requires_grad=True)
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(g.copy()))
    (y * 3 + y).sum().backward()
    assert len(seen) == 1 and np.array_equal(seen[0], [4.0, 4.0, 4.0])
    assert np.array_equal(x.grad, [8.0, 8.0, 8.0])


def test_a_callback_queued_by_a_callback_also_runs():
    w = nn.Tensor(np.ones(2), requires_grad=True)
    events = []
    w.register_post_accumulate_grad_hook(
        lambda t: nn.queue_callback(
            lambda: (events.append("first"), nn.queue_callback(lambda: events.append("second")))))
    (w * 2).sum().backward()
    assert events == ["first", "second"]
    (w * 2).sum().backward()                            # callbacks were discarded, queued anew
    assert events == ["first", "second", "first", "second"]


def test_kept_gradients_never_alias_arrays_held_elsewhere():
    mine = np.ones(3)
    leaf = nn.Tensor(np.zeros(3), requires_grad=True)
    leaf.backward(mine)                                  # the caller's array
    kept = np.full(3, 5.0)
    hooked = nn.Tensor(np.zeros(3), requires_grad=True)
    hooked.register_hook(lambda g: kept)                 # an array the hook's owner keeps
    (hooked * 1).sum().backward()
    saved = np.full(3, 7.0)

    class Constant(nn.Function):
        @staticmethod
        def forward(ctx, x):
            return x.copy()

        @staticmethod
        def backward(ctx, grad):
            return saved
    through = nn.Tensor(np.zeros(3), requires_grad=True)
    Constant.apply(through).sum().backward()
    for tensor, original in ((leaf, mine), (hooked, kept), (through, saved)):
        tensor.grad += 100
        assert original.max() < 100


class Scale(nn.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        ctx.seen = ctx.needs_input_grad
        return x * w

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return [grad * w, (grad * x).sum(axis=0)]     # a list is fine too


def test_function_with_saved_tensors_and_two_inputs_matches_finite_differences():
    from tests.gradcheck import check_gradients
    rng = np.random.default_rng(0)
    check_gradients(lambda x, w: Scale.apply(x, w), rng.standard_normal((3, 2)), rng.standard_normal(2))
    x, w = nn.Tensor(np.ones((3, 2))), nn.Tensor(np.ones(2), requires_grad=True)
    y = Scale.apply(x, w)
    assert y.requires_grad and not nn.Tensor(np.ones(2)).requires_grad
    y.sum().backward()
    assert np.array_equal(w.grad, [3.0, 3.0]) and x.grad is None


def test_function_gradient_count_and_shape_errors_name_the_op():
    class Forgetful(nn.Function):
        @staticmethod
        def forward(ctx, x, factor):
            return x * factor

        @staticmethod
        def backward(ctx, grad):
            return grad                                   # forgot None for `factor`

    class Misshapen(nn.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad.T

    t = nn.Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match="Forgetful.backward returned 1 gradients, forward took 2"):
        Forgetful.apply(t, 2.0).sum().backward()
    with pytest.raises(RuntimeError, match=r"Misshapen backward returned a gradient of shape \(3, 2\) "
                                           r"for an input of shape \(2, 3\)"):
        Misshapen.apply(t).sum().backward()


def test_function_outside_grad_mode_records_nothing():
    t = nn.Tensor(np.ones(2), requires_grad=True)
    with nn.no_grad():
        y = Scale.apply(t, nn.Tensor(np.ones(2)))
    assert not y.requires_grad and y.is_leaf


def test_no_grad_works_as_a_decorator_and_restores_the_mode():
    @nn.no_grad()
    def inference(t):
        return t * 2
    t = nn.Tensor(np.ones(2), requires_grad=True)
    assert not inference(t).requires_grad and nn.is_grad_enabled() and (t * 2).requires_grad


def test_a_fresh_gradient_is_kept_without_a_copy():
    made = []

    class Twice(nn.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            fresh = grad * 2
            made.append(id(fresh))          # the id only: a reference would force a copy
            return fresh
    leaf = nn.Tensor(np.ones(3), requires_grad=True)
    Twice.apply(leaf).sum().backward()
    assert id(leaf.grad) == made[0]


class _PassGradient(nn.Function):
    """Identity forward; backward returns whatever `make` builds from the incoming gradient."""

    @staticmethod
    def forward(ctx, x, make):
        ctx.make = make
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        return ctx.make(grad), None


def test_first_gradient_that_only_the_engine_holds_becomes_grad_without_a_copy():
    made = []

    def fresh(grad):
        out = grad * 2.0
        made.append(id(out))                # its id only: no reference kept
        return out
    x = nn.Tensor(np.ones(3), requires_grad=True)
    _PassGradient.apply(x, fresh).sum().backward()
    assert id(x.grad) == made[0]
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_first_gradient_someone_else_holds_is_copied_into_grad():
    kept = []

    def shared(grad):
        out = grad * 2.0
        kept.append(out)                    # a reference outside the engine
        return out
    x = nn.Tensor(np.ones(3), requires_grad=True)
    _PassGradient.apply(x, shared).sum().backward()
    assert x.grad is not kept[0] and not np.shares_memory(x.grad, kept[0])
    kept[0][...] = 0
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])
