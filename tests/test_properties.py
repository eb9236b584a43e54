"""Property-based: random world sizes, shapes, dtypes, counts and ops through every
algorithm on the in-process transport, compared with the reference."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import collectives as cc
from tests.reference import DTYPES, assert_matches, make_input

ALGORITHMS = {c: cc.run_threads(1, lambda comm, c=c: comm.algorithms(c))[0]
              for c in ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce")}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw, collective):
    dtype = draw(st.sampled_from(DTYPES))
    ops = ["sum", "prod", "max", "min"] + (["avg"] if np.dtype(dtype).kind == "f" else [])
    shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple))
    return {"size": draw(st.integers(1, 9)), "shape": shape, "dtype": dtype,
            "op": draw(st.sampled_from(ops)), "seed": draw(st.integers(0, 2 ** 16)),
            "algorithm": draw(st.sampled_from(ALGORITHMS[collective] + ["auto"]))}


def inputs_for(case):
    count = int(np.prod(case["shape"]))
    return [make_input(r, count, case["dtype"], case["op"], seed=case["seed"]).reshape(case["shape"])
            for r in range(case["size"])]


@SETTINGS
@given(cases("allreduce"))
def test_allreduce_property(case):
    inputs = inputs_for(case)
    results = cc.run_threads(case["size"], lambda comm: comm.allreduce(
        inputs[comm.rank].copy(), case["op"], algorithm=case["algorithm"]), timeout=20)
    for result in results:
        assert result.shape == case["shape"] and result.dtype == inputs[0].dtype
        assert_matches(result.reshape(-1), [x.reshape(-1) for x in inputs], case["op"], str(case))
        assert result.tobytes() == results[0].tobytes()


@SETTINGS
@given(cases("reduce_scatter"))
def test_reduce_scatter_property(case):
    inputs = [x.reshape(-1) for x in inputs_for(case)]
    results = cc.run_threads(case["size"], lambda comm: comm.reduce_scatter(
        inputs[comm.rank], case["op"], algorithm=case["algorithm"]), timeout=20)
    assert_matches(np.concatenate(results), inputs, case["op"], str(case))


@SETTINGS
@given(cases("allgather"))
def test_allgather_property(case):
    inputs = inputs_for(case)
    results = cc.run_threads(case["size"], lambda comm: comm.allgather(
        inputs[comm.rank], algorithm=case["algorithm"]), timeout=20)
    expected = np.concatenate([np.atleast_1d(x) for x in inputs])
    for result in results:
        assert result.tobytes() == expected.tobytes() and result.shape == expected.shape


@SETTINGS
@given(cases("broadcast"), st.integers(0, 8))
def test_broadcast_property(case, root):
    root %= case["size"]
    inputs = inputs_for(case)

    def body(comm):
        x = inputs[comm.rank].copy()
        return comm.broadcast(x, root, algorithm=case["algorithm"])
    for result in cc.run_threads(case["size"], body, timeout=20):
        assert result.tobytes() == inputs[root].tobytes()


@SETTINGS
@given(cases("reduce"), st.integers(0, 8))
def test_reduce_property(case, root):
    root %= case["size"]
    inputs = inputs_for(case)
    results = cc.run_threads(case["size"], lambda comm: comm.reduce(
        inputs[comm.rank].copy(), case["op"], root, algorithm=case["algorithm"]), timeout=20)
    assert_matches(results[root].reshape(-1), [x.reshape(-1) for x in inputs], case["op"], str(case))
    assert all(r is None for i, r in enumerate(results) if i != root)
