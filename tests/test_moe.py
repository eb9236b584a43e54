"""The expert-parallel mixture of experts equals the unsharded layer: outputs, input
gradients, every expert's weight gradients and (summed over ranks) the gate's, to 1e-9 in
float64, with uneven token counts per rank and per expert, experts without tokens
included."""
import numpy as np
import pytest

import collectives as cc
import nn
from nn.parallel.moe import MixtureOfExperts

D_MODEL, D_HIDDEN = 6, 10


def silence(model, expert):
    """Make the gate never pick `expert` (a large negative bias): an expert with no token."""
    model.gate.bias.data[expert] = -1e3


def dense_run(x, weights, num_experts, dead):
    model = MixtureOfExperts(D_MODEL, D_HIDDEN, num_experts, seed=3, dtype=np.float64)
    silence(model, dead)
    inputs = nn.Tensor(x, requires_grad=True)
    out = model(inputs)
    (out * nn.Tensor(weights)).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out.data, inputs.grad, grads


def sharded_run(comm, x, weights, num_experts, dead, bounds):
    model = MixtureOfExperts(D_MODEL, D_HIDDEN, num_experts, comm=comm, seed=3, dtype=np.float64)
    silence(model, dead)
    mine = slice(bounds[comm.rank], bounds[comm.rank + 1])
    inputs = nn.Tensor(x[mine].copy(), requires_grad=True)
    out = model(inputs)
    (out * nn.Tensor(weights[mine])).sum().backward()
    for p in model.replicated_parameters():
        p.grad = comm.allreduce(np.ascontiguousarray(p.grad))
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out.data, inputs.grad, grads, list(model.local)


@pytest.mark.parametrize("size, num_experts, tokens", [
    (1, 3, [7]), (2, 4, [9, 4]), (3, 4, [5, 0, 8]), (4, 4, [3, 11, 1, 6]), (4, 8, [10, 2, 7, 0])])
def test_expert_parallel_equals_the_unsharded_layer(size, num_experts, tokens):
    rng = np.random.default_rng(size * 10 + num_experts)
    x = rng.standard_normal((sum(tokens), D_MODEL))
    weights = rng.standard_normal(x.shape)
    dead = num_experts - 2
    expected_out, expected_dx, expected_grads = dense_run(x, weights, num_experts, dead)
    bounds = np.concatenate([[0], np.cumsum(tokens)]).tolist()
    results = cc.run_threads(size, sharded_run, x, weights, num_experts, dead, bounds, timeout=30)
    seen = set()
    for rank, (out, dx, grads, local) in enumerate(results):
        mine = slice(bounds[rank], bounds[rank + 1])
        np.testing.assert_allclose(out, expected_out[mine], rtol=0, atol=1e-9)
        np.testing.assert_allclose(dx, expected_dx[mine], rtol=0, atol=1e-9)
        for name, grad in grads.items():
            np.testing.assert_allclose(grad, expected_grads[name], rtol=0, atol=1e-9, err_msg=name)
        seen.update(local)
        assert {name.split(".")[1] for name in grads if name.startswith("experts.")} == {str(e) for e in local}
    assert seen == set(range(num_experts))
    assert not np.any(expected_grads[f"experts.{dead}.0.weight"]), "the silenced expert got no token"
    assert np.any(expected_grads["experts.0.0.weight"])


def test_every_rank_holds_its_share_of_the_experts():
    def body(comm):
        return list(MixtureOfExperts(4, 4, 6, comm=comm).local)
    assert cc.run_threads(4, body) == [[0, 1], [2, 3], [4], [5]]


def test_more_ranks_than_experts_is_a_clear_error():
    def body(comm):
        with pytest.raises(ValueError, match="3 experts cannot be sharded over 4 ranks"):
            MixtureOfExperts(4, 4, 3, comm=comm)
    cc.run_threads(4, body)


@pytest.mark.mpi
def test_the_moe_example_learns_under_mpirun():
    from tests.mpirun import mpirun
    result = mpirun(2, "examples/train_digits_moe.py", "--epochs", "2", "--experts", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    accuracy = float(result.stdout.split("final test accuracy ")[1].split("%")[0])
    assert accuracy > 85, result.stdout


@pytest.mark.parametrize("size", [2, 3, 4])
def test_bytes_sent_per_step_equal_the_formula(size):
    from argparse import Namespace

    from bench import parallel_moe
    args = Namespace(dim=8, hidden=12, batch=6 * size)
    for _step, _params, sent, predicted in cc.run_threads(size, parallel_moe.measure, args, timeout=30):
        assert sent == predicted and sent > 0
