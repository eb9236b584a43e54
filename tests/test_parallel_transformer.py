"""The tensor-parallel transformer equals the unsharded one (float64, relative 1e-9): loss,
input gradients and every parameter-gradient slice, for tp = 1, 2, 4, uneven heads and
vocabulary, with and without sequence parallelism; and hybrid dp x tp training reaches the
single-process weights."""
import copy

import numpy as np
import pytest

import collectives as cc
import nn
from nn import functional as F
from nn.parallel import (
    DistributedDataParallel,
    DistributedSampler,
    ParallelAttention,
    ParallelGPT,
    ParallelTransformerBlock,
    ProcessGrid,
    VocabParallelEmbedding,
    gather_from_sequence_parallel_region,
    reduce_scatter_to_sequence_parallel_region,
    vocab_parallel_cross_entropy,
)

RTOL, ATOL = 1e-9, 1e-12
RNG = np.random.default_rng(0)


def config(**changes):
    settings = dict(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_embd=8, hidden=12, dtype="float64")
    settings.update(changes)
    return nn.GPTConfig(**settings)


def expected_shards(full, make_shard, comm):
    """Each parameter's expected (weight, gradient) on this rank: the unsharded model's
    weights and gradients, cut by the same sharding (a copy of the model holding its
    gradients as weights). Works on copies: the ranks are threads sharing `full`."""
    holding_grads = copy.deepcopy(full)
    holding_grads.load_state_dict({k: p.grad for k, p in full.named_parameters()})
    return make_shard(copy.deepcopy(full), comm).state_dict(), make_shard(holding_grads, comm).state_dict()


def check_shard(model, expected_weights, expected_grads):
    for name, p in model.named_parameters():
        assert np.array_equal(p.data, expected_weights[name]), f"{name}: initial slice differs"
        np.testing.assert_allclose(p.grad, expected_grads[name], rtol=RTOL, atol=ATOL, err_msg=name)


# -- the whole model --------------------------------------------------------------------------------
@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("sequence_parallel", [False, True])
@pytest.mark.parametrize("shape", [dict(n_head=4, vocab_size=12), dict(n_head=6, n_embd=12, vocab_size=11),
                                   dict(n_head=4, vocab_size=11, tie_weights=False)],
                         ids=["even", "uneven-heads-vocab", "untied"])
def test_parallel_gpt_equals_gpt(tp, sequence_parallel, shape):
    cfg = config(**shape)
    idx, targets = RNG.integers(0, cfg.vocab_size, (3, 8)), RNG.integers(0, cfg.vocab_size, (3, 8))
    nn.manual_seed(7)
    full = nn.GPT(cfg)
    loss = full(idx, targets)
    loss.backward()

    def body(comm):
        nn.manual_seed(7)
        model = ParallelGPT(cfg, comm, sequence_parallel=sequence_parallel)
        sharded = model(idx, targets)
        sharded.backward()
        weights, grads = expected_shards(full, lambda f, c: ParallelGPT.from_gpt(f, c, sequence_parallel), comm)
        check_shard(model, weights, grads)
        return sharded.item()
    for value in cc.run_threads(tp, body):
        assert abs(value - loss.item()) <= RTOL * abs(loss.item())


def test_heads_are_sharded_by_cc_partition():
    nn.manual_seed(1)
    full = nn.CausalSelfAttention(6, 3, dtype=np.float64)          # 3 heads of 2 over 2 ranks: 2 + 1

    def body(comm):
        return ParallelAttention.from_attention(full, comm).c_attn.weight.data, comm.rank
    w = full.c_attn.weight.data
    (first, _), (second, _) = cc.run_threads(2, body)
    assert np.array_equal(first, np.concatenate([w[0:4], w[6:10], w[12:16]]))       # heads 0, 1 of q, k, v
    assert np.array_equal(second, np.concatenate([w[4:6], w[10:12], w[16:18]]))     # head 2


@pytest.mark.parametrize("tp,sequence_parallel", [(2, False), (2, True), (4, True)])
def test_parallel_block_input_gradient_equals_unsharded(tp, sequence_parallel):
    x, weights = RNG.standard_normal((2, 8, 8)), RNG.standard_normal((2, 8, 8))
    nn.manual_seed(2)
    full = nn.TransformerBlock(8, 4, hidden=10, dtype=np.float64)
    xt = nn.Tensor(x.copy(), requires_grad=True)
    out = full(xt)
    (out * nn.Tensor(weights)).sum().backward()

    def body(comm):
        block = ParallelTransformerBlock.from_block(full, comm, sequence_parallel=sequence_parallel)
        rows = slice(None)
        if sequence_parallel:
            offsets = cc.partition(8, comm.size)
            rows = slice(offsets[comm.rank], offsets[comm.rank + 1])
        mine = nn.Tensor(x[:, rows].copy(), requires_grad=True)
        y = block(mine)
        (y * nn.Tensor(weights[:, rows])).sum().backward()
        return rows, y.data, mine.grad
    for rows, y, grad in cc.run_threads(tp, body):
        np.testing.assert_allclose(y, out.data[:, rows], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(grad, xt.grad[:, rows], rtol=RTOL, atol=ATOL)


# -- the vocabulary-parallel pieces -----------------------------------------------------------------
@pytest.mark.parametrize("tp", [2, 3, 4])
def test_vocab_parallel_embedding_and_cross_entropy(tp):
    vocab, dim = 10, 3
    idx = np.array([[0, 9, 4, 4], [5, 1, 9, 2]])                   # repeated and boundary tokens
    nn.manual_seed(0)
    table = nn.Embedding(vocab, dim, dtype=np.float64)
    logits = RNG.standard_normal((2, 4, vocab)) * 30                  # large: the shift matters
    targets = RNG.integers(0, vocab, (2, 4))
    weights = RNG.standard_normal((2, 4, dim))
    emb = table(idx)
    (emb * nn.Tensor(weights)).sum().backward()
    full_logits = nn.Tensor(logits.copy(), requires_grad=True)
    loss = F.cross_entropy(full_logits.reshape(-1, vocab), targets.reshape(-1))
    loss.backward()

    def body(comm):
        offsets = cc.partition(vocab, comm.size)
        cols = slice(offsets[comm.rank], offsets[comm.rank + 1])
        shard = VocabParallelEmbedding.from_embedding(table, comm)
        out = shard(idx)
        (out * nn.Tensor(weights)).sum().backward()
        mine = nn.Tensor(logits[..., cols].copy(), requires_grad=True)
        value = vocab_parallel_cross_entropy(mine, targets, comm, vocab)
        value.backward()
        return cols, out.data, shard.weight.grad, value.item(), mine.grad
    for cols, out, table_grad, value, logits_grad in cc.run_threads(tp, body):
        np.testing.assert_allclose(out, emb.data, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(table_grad, table.weight.grad[cols], rtol=RTOL, atol=ATOL)
        assert abs(value - loss.item()) <= RTOL * loss.item()
        np.testing.assert_allclose(logits_grad, full_logits.grad[..., cols], rtol=RTOL, atol=ATOL)


def test_sequence_operators_are_conjugate():
    def body(comm):
        local = nn.Tensor(np.full((1, 2, 3), float(comm.rank + 1)), requires_grad=True)
        gathered = gather_from_sequence_parallel_region(local, comm)         # (1, 2 * size, 3)
        gathered.sum().backward()
        full = nn.Tensor(np.ones((1, 2 * comm.size, 3)), requires_grad=True)
        mine = reduce_scatter_to_sequence_parallel_region(full, comm)
        (mine * (comm.rank + 1)).sum().backward()
        return gathered.data[0, :, 0], local.grad, mine.data, full.grad[0, :, 0]
    for gathered, local_grad, mine, full_grad in cc.run_threads(2, body):
        assert gathered.tolist() == [1, 1, 2, 2]
        assert (local_grad == 2).all()                       # reduce-scatter of two ranks' ones
        assert (mine == 2).all() and mine.shape == (1, 2, 3)
        assert full_grad.tolist() == [1, 1, 2, 2]            # all-gather of each rank's (rank + 1)


def test_clear_errors():
    def body(comm):
        with pytest.raises(ValueError, match="at least one"):
            ParallelAttention(8, 2, comm)
        with pytest.raises(ValueError, match="divide evenly by the 4"):
            ParallelGPT(config(), comm, sequence_parallel=True)(np.zeros((1, 6), dtype=int))
        with pytest.raises(ValueError, match="vocabulary columns"):
            vocab_parallel_cross_entropy(nn.Tensor(np.zeros((2, 5))), np.zeros(2, int), comm, 11)
    cc.run_threads(4, body)


# -- training -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sequence_parallel", [False, True])
def test_hybrid_data_and_tensor_parallel_training_equals_single_process(sequence_parallel):
    cfg = config(n_head=2, n_embd=8, hidden=8, vocab_size=9)
    steps, global_batch = 20, 4
    data = RNG.integers(0, cfg.vocab_size, (steps * global_batch, cfg.block_size + 1))
    nn.manual_seed(3)
    full = nn.GPT(cfg)
    optimizer = nn.optim.AdamW(full.parameters(), lr=1e-2)
    order = np.random.default_rng([0, 0]).permutation(len(data))
    for step in range(steps):
        rows = data[order[step * global_batch:(step + 1) * global_batch]]
        optimizer.zero_grad()
        full(rows[:, :-1], rows[:, 1:]).backward()
        optimizer.step()

    def body(comm):
        grid = ProcessGrid(comm, tp=2)
        nn.manual_seed(3)
        model = DistributedDataParallel(ParallelGPT(cfg, grid.tp, sequence_parallel), grid.dp)
        opt = nn.optim.AdamW(model.parameters(), lr=1e-2)
        batches = DistributedSampler(len(data), grid.dp, seed=0).batches(global_batch // grid.dp_size)
        for _ in range(steps):
            rows = data[next(batches)]
            opt.zero_grad()
            model(rows[:, :-1], rows[:, 1:]).backward()
            opt.step()
        expected, _ = expected_shards(full, lambda f, c: ParallelGPT.from_gpt(f, c, sequence_parallel), grid.tp)
        for name, value in model.module.state_dict().items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-8, atol=1e-10, err_msg=name)
    cc.run_threads(4, body, timeout=60)


def test_dropout_masks_agree_across_the_tensor_parallel_group():
    """Without sequence parallelism the dropout regions are replicated: every rank draws the
    same masks in the same order as the unsharded model (same seed), so even with dropout
    the loss is the unsharded one."""
    cfg = config(dropout=0.3)
    idx, targets = RNG.integers(0, cfg.vocab_size, (2, 8)), RNG.integers(0, cfg.vocab_size, (2, 8))
    nn.manual_seed(4)
    expected = nn.GPT(cfg)(idx, targets).item()
    nn.manual_seed(4)
    assert nn.GPT(cfg).eval()(idx, targets).item() != expected       # dropout did act

    def body(comm):
        nn.manual_seed(4)
        return ParallelGPT(cfg, comm)(idx, targets).item()
    for value in cc.run_threads(2, body):
        assert abs(value - expected) <= RTOL * expected
