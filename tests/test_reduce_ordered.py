"""The n-way ordered reduction of the shared-memory algorithms: common.reduce_ordered over
kernels.reduce_chain_into, operands combined in the order given, the same bits whether
nothing observes the reductions (one kernels call) or observers see every step."""
import numpy as np
import pytest

import kernels
from collectives.algorithms.common import reduce_ordered, reductions_through
from kernels import reference


def operands_of(dtype, n=5, count=257):
    rng = np.random.default_rng(7)
    operands = [rng.standard_normal(count).astype(dtype) for _ in range(n)]
    if np.dtype(dtype).kind == "f":
        operands[1][:3] = [np.nan, -0.0, np.inf]
        operands[3][:3] = [-np.inf, 0.0, np.nan]
    return operands


def stepwise(operands, op):
    expected = operands[0].copy()
    for operand in operands[1:]:
        reference.reduce_into(expected, operand, op)
    return expected


@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.uint8])
def test_the_plain_path_and_the_observed_path_give_the_same_bits(op, dtype):
    operands = operands_of(dtype)
    plain = np.empty_like(operands[0])
    reduce_ordered(plain, operands, op)
    seen = []

    def reducer(dst, src, op_name, reverse):
        seen.append(op_name)
        return reference.reduce_into(dst, src, op_name, reverse)
    observed = np.empty_like(operands[0])
    with reductions_through(reducer):
        reduce_ordered(observed, iter(operands), op)
    assert seen == [op] * 4                        # the observer saw every step
    assert plain.tobytes() == observed.tobytes() == stepwise(operands, op).tobytes()


def test_operands_are_taken_one_at_a_time():
    """Operand i is asked for only once the first i are combined (a peer is waited for
    only when its data are next)."""
    operands = [np.full(3, float(j + 1)) for j in range(4)]
    out = np.zeros(3)
    seen_before = []

    def lazily():
        for operand in operands:
            seen_before.append(out[0])
            yield operand
    kernels.reduce_chain_into(out, lazily(), "sum")
    assert seen_before == [0.0, 0.0, 3.0, 6.0] and out[0] == 10.0


def test_result_may_be_the_first_operand_and_copy_to_gets_it():
    operands = [np.full(4, float(j)) for j in range(3)]
    copy = np.zeros(4)
    reduce_ordered(operands[0], operands, "sum", copy_to=copy)
    assert np.array_equal(copy, np.full(4, 3.0)) and np.array_equal(operands[0], copy)


def test_a_later_operand_of_another_shape_or_dtype_is_refused_not_broadcast():
    out = np.zeros(4)
    with pytest.raises(ValueError, match="equal shapes"):
        kernels.reduce_chain_into(out, [np.ones(4), np.ones(4), np.ones(1)], "sum")
    with pytest.raises(TypeError, match="equal dtypes"):
        kernels.reduce_chain_into(out, [np.ones(4), np.ones(4), np.ones(4, np.float32)], "sum")


def test_the_first_two_operands_and_the_op_are_checked_against_out_too():
    out = np.zeros(4)
    with pytest.raises(ValueError, match="equal shapes"):
        kernels.reduce_chain_into(out, [np.ones(4), np.ones(3)], "sum")
    with pytest.raises(ValueError, match="equal shapes"):
        kernels.reduce_chain_into(out, [np.ones(3), np.ones(3)], "sum")
    with pytest.raises(TypeError, match="equal dtypes"):
        kernels.reduce_chain_into(out, [np.ones(4, np.float32), np.ones(4, np.float32)], "sum")
    with pytest.raises(ValueError, match="unknown op"):
        kernels.reduce_chain_into(out, [np.ones(4), np.ones(4)], "xor")
