"""The transformer pieces of nn: each new op against finite differences (float64), the
attention and the whole GPT against PyTorch where it is installed, and clear errors."""
import math

import numpy as np
import pytest

import nn
from nn import functional as F
from tests.gradcheck import check_gradients

RNG = np.random.default_rng(0)


def tiny_config(**changes):
    settings = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dtype="float64")
    settings.update(changes)
    return nn.GPTConfig(**settings)


# -- finite differences -----------------------------------------------------------------------
def test_embedding_gradient_accumulates_repeated_rows():
    idx = np.array([[1, 3, 1], [0, 1, 3]])
    check_gradients(lambda w: F.embedding(idx, w), RNG.standard_normal((5, 4)))
    weight = nn.Tensor(np.zeros((5, 2)), requires_grad=True)
    F.embedding(idx, weight).sum().backward()
    assert weight.grad[:, 0].tolist() == [1, 3, 0, 2, 0]          # row 1 used three times, 4 never


def test_masked_fill_gradient_is_zero_where_filled():
    mask = np.array([[True, False, False], [False, True, False]])
    check_gradients(lambda x: x.masked_fill(mask, 7.0), RNG.standard_normal((4, 2, 3)))
    out = nn.Tensor(np.ones((2, 3))).masked_fill(mask, -math.inf)
    assert np.isneginf(out.data[mask]).all() and (out.data[~mask] == 1).all()


def test_batched_matmul_over_leading_axes():
    check_gradients(lambda a, b: a @ b, RNG.standard_normal((2, 3, 4, 5)), RNG.standard_normal((2, 3, 5, 2)))
    check_gradients(lambda a, b: a @ b, RNG.standard_normal((2, 3, 4, 5)), RNG.standard_normal((5, 2)))


def test_softmax_over_last_axis_is_stable_and_differentiable():
    check_gradients(lambda x: F.softmax(x, axis=-1), RNG.standard_normal((2, 3, 4)))
    huge = F.softmax(nn.Tensor(np.array([[1000.0, 1000.0, -1000.0]])))
    assert np.allclose(huge.data, [[0.5, 0.5, 0.0]])


@pytest.mark.parametrize("causal", [True, False])
def test_attention_gradients(causal):
    q, k, v = (RNG.standard_normal((2, 2, 4, 3)) for _ in range(3))
    check_gradients(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, causal=causal), q, k, v)


def test_causal_attention_ignores_the_future():
    q, k, v = (RNG.standard_normal((1, 5, 3)) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, causal=True).data
    k2, v2 = k.copy(), v.copy()
    k2[:, 3:], v2[:, 3:] = 99.0, -99.0                 # change positions 3 and 4 only
    changed = F.scaled_dot_product_attention(q, k2, v2, causal=True).data
    assert np.array_equal(out[:, :3], changed[:, :3]) and not np.allclose(out[:, 3:], changed[:, 3:])
    np.testing.assert_allclose(out[:, 0], v[:, 0])     # the first position sees only itself


def test_transformer_block_and_gpt_gradients():
    nn.manual_seed(1)
    block = nn.TransformerBlock(4, 2, hidden=6, dtype=np.float64)
    check_gradients(block, RNG.standard_normal((2, 3, 4)))
    nn.manual_seed(2)
    model = nn.GPT(tiny_config(n_layer=1, n_embd=4, hidden=6, block_size=4, vocab_size=5))
    idx = RNG.integers(0, 5, (2, 4))
    model(idx[:, :3], idx[:, 1:]).backward()
    params = dict(model.named_parameters())
    for name in ("wte.weight", "wpe.weight", "blocks.0.attn.c_attn.weight", "blocks.0.mlp.c_fc.bias", "ln_f.bias"):
        numeric = _numeric(lambda: model(idx[:, :3], idx[:, 1:]).item(), params[name].data)
        np.testing.assert_allclose(params[name].grad, numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def _numeric(loss, array, eps=1e-6):
    """d loss / d array by central differences, perturbing `array` in place."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        original = array[i]
        array[i] = original + eps
        plus = loss()
        array[i] = original - eps
        minus = loss()
        array[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad


# -- behaviour ----------------------------------------------------------------------------------
def test_tied_head_shares_the_embedding_and_untied_has_its_own():
    tied, untied = nn.GPT(tiny_config()), nn.GPT(tiny_config(tie_weights=False))
    assert "lm_head.weight" not in dict(tied.named_parameters())
    assert dict(untied.named_parameters())["lm_head.weight"].shape == (11, 8)
    assert sum(p.size for p in untied.parameters()) - sum(p.size for p in tied.parameters()) == 11 * 8


def test_gpt_starts_near_uniform_and_learns_a_repeating_sequence():
    nn.manual_seed(0)
    model = nn.GPT(tiny_config())
    idx = np.tile(np.arange(9) % 11, (4, 1))
    first = model(idx[:, :-1], idx[:, 1:]).item()
    assert abs(first - math.log(11)) < 0.1
    optimizer = nn.optim.AdamW(model.parameters(), lr=3e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first
    sample = model.generate(idx[:1, :2], 5, temperature=0.01)
    assert sample.shape == (1, 7) and sample[0].tolist() == list(range(7))


def test_bad_input_is_refused_with_a_clear_error():
    model = nn.GPT(tiny_config())
    with pytest.raises(ValueError, match="longer than block_size"):
        model(np.zeros((1, 9), dtype=int))
    with pytest.raises(IndexError, match=r"\[0, 11\)"):
        model(np.array([[3, 11]]))
    with pytest.raises(TypeError, match="integers"):
        F.embedding(np.array([0.5]), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="does not broadcast"):
        nn.Tensor(np.zeros((2, 3))).masked_fill(np.ones((3, 3), bool), 0)
    with pytest.raises(ValueError, match="divide evenly"):
        nn.CausalSelfAttention(6, 4)


# -- against PyTorch --------------------------------------------------------------------------
def test_attention_matches_pytorch():
    torch = pytest.importorskip("torch")
    q, k, v = (RNG.standard_normal((2, 3, 5, 4)) for _ in range(3))
    mask = RNG.random((5, 5)) > 0.3
    mask[:, 0] = True                                        # no row fully masked
    for kwargs in ({"causal": True}, {"attn_mask": mask}, {"attn_mask": RNG.standard_normal((5, 5))}):
        tensors = [nn.Tensor(a.copy(), requires_grad=True) for a in (q, k, v)]
        theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = F.scaled_dot_product_attention(*tensors, **kwargs)
        torch_kwargs = ({"is_causal": True} if "causal" in kwargs
                        else {"attn_mask": torch.from_numpy(kwargs["attn_mask"])})
        reference = torch.nn.functional.scaled_dot_product_attention(*theirs, **torch_kwargs)
        weights = RNG.standard_normal(out.shape)
        (out * nn.Tensor(weights)).sum().backward()
        (reference * torch.from_numpy(weights)).sum().backward()
        np.testing.assert_allclose(out.data, reference.detach().numpy(), rtol=1e-10, atol=1e-12)
        for ours, ref in zip(tensors, theirs):
            np.testing.assert_allclose(ours.grad, ref.grad.numpy(), rtol=1e-9, atol=1e-12)


def torch_gpt_loss(torch, state, config, idx, targets):
    """The GPT forward written with PyTorch's own functional ops on our weights."""
    tf = torch.nn.functional
    w = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
    idx_t = torch.from_numpy(idx)
    x = tf.embedding(idx_t, w["wte.weight"]) + w["wpe.weight"][: idx.shape[1]]
    b, t, c = x.shape
    h = config.n_head
    for i in range(config.n_layer):
        p = f"blocks.{i}."
        y = tf.layer_norm(x, (c,), w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        q, k, v = tf.linear(y, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]).split(c, dim=2)
        q, k, v = (z.view(b, t, h, c // h).transpose(1, 2) for z in (q, k, v))
        y = tf.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + tf.linear(y, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"])
        y = tf.layer_norm(x, (c,), w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        y = tf.gelu(tf.linear(y, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]))
        x = x + tf.linear(y, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
    x = tf.layer_norm(x, (c,), w["ln_f.weight"], w["ln_f.bias"])
    logits = tf.linear(x, w.get("lm_head.weight", w["wte.weight"]))
    loss = tf.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets.reshape(-1)))
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in w.items()}


@pytest.mark.parametrize("tie", [True, False])
def test_gpt_loss_and_every_gradient_match_pytorch(tie):
    torch = pytest.importorskip("torch")
    config = tiny_config(tie_weights=tie)
    nn.manual_seed(3)
    model = nn.GPT(config)
    idx = RNG.integers(0, config.vocab_size, (3, 7))
    targets = RNG.integers(0, config.vocab_size, (3, 7))
    loss = model(idx, targets)
    loss.backward()
    reference, grads = torch_gpt_loss(torch, model.state_dict(), config, idx, targets)
    assert abs(loss.item() - reference) < 1e-12
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
