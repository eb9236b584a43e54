"""The hierarchical all-reduce passes the same checks as every registered algorithm, on the
tests' in-process transport, for every node size that divides the world."""
import numpy as np
import pytest

import collectives as cc
from collectives.algorithms import names
from collectives.communicator import Communicator
from collectives.transport.contract import Capabilities
from collectives.transport.local import run_threads
from tests.reference import DTYPES, assert_matches, make_input

LAYOUTS = [(n, g) for n in (1, 2, 3, 4, 6, 8, 12, 16) for g in range(1, n + 1) if n % g == 0]


def run(n, g, fn):
    """fn(comm) on n in-process ranks whose transport says it has g ranks per node."""
    def wrap(transport):
        return Communicator(transport, timeout=20, flight_dir="(test)")
    return run_threads(n, fn, timeout=20, wrap=wrap, capabilities=Capabilities(ranks_per_node=g))


def test_offered_only_where_nodes_are_known_and_divide_the_world():
    assert "hierarchical" not in cc.run_threads(4, lambda comm: comm.algorithms("allreduce"))[0]
    assert "hierarchical" in run(4, 2, lambda comm: comm.algorithms("allreduce"))[0]
    assert "hierarchical" not in run(6, 4, lambda comm: comm.algorithms("allreduce"))[0]

    class Endpoint:
        size, capabilities = 8, Capabilities(ranks_per_node=4)
    assert "hierarchical" in names("allreduce", Endpoint())


@pytest.mark.parametrize("n, g", LAYOUTS)
@pytest.mark.parametrize("count", [0, 1, 5, 13, 1000])
def test_sum_matches_reference_and_is_bitwise_equal_on_all_ranks(n, g, count):
    inputs = [make_input(r, count, "float64", "sum") for r in range(n)]
    results = run(n, g, lambda comm: comm.allreduce(inputs[comm.rank].copy(), algorithm="hierarchical"))
    for result in results:
        assert_matches(result, inputs, "sum", f"n={n} g={g} count={count}")
        assert result.tobytes() == results[0].tobytes()


OP_DTYPES = [(op, dtype) for op in ("sum", "prod", "max", "min", "avg") for dtype in DTYPES
             if op != "avg" or np.dtype(dtype).kind == "f"]   # avg on integers is an error


@pytest.mark.parametrize("op, dtype", OP_DTYPES)
def test_every_op_and_dtype(op, dtype):
    n, g, count = 6, 2, 37
    inputs = [make_input(r, count, dtype, op) for r in range(n)]
    results = run(n, g, lambda comm: comm.allreduce(inputs[comm.rank].copy(), op, algorithm="hierarchical"))
    for result in results:
        assert result.dtype == np.dtype(dtype)
        assert_matches(result, inputs, op, f"{dtype} {op}")
        assert result.tobytes() == results[0].tobytes()


def test_out_of_place_keeps_the_input_and_signed_zeros_agree():
    values = [np.array([0.0, -0.0, np.nan, 1.0]) * (1 if r % 2 else -1) for r in range(8)]

    def body(comm):
        x = values[comm.rank].copy()
        out = comm.allreduce(x, "max", algorithm="hierarchical", out=np.empty_like(x))
        assert np.array_equal(x, values[comm.rank], equal_nan=True)
        return out
    results = run(8, 4, body)
    assert all(r.tobytes() == results[0].tobytes() for r in results)
