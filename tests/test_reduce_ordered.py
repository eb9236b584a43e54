"""reduce_ordered, the shared-memory algorithms' reduction: operands combined in rank
order, the same bits whether it calls the NumPy ufunc itself (the plain path) or goes
through combine_into/reduce_into (while observers watch the reductions)."""
import numpy as np
import pytest

from collectives.algorithms.common import plain_ufunc, reductions_through
from collectives.algorithms.shm import reduce_ordered
from kernels import reference


@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.uint8])
def test_the_plain_path_and_the_observed_path_give_the_same_bits(op, dtype):
    rng = np.random.default_rng(7)
    operands = [rng.standard_normal(257).astype(dtype) for _ in range(5)]
    if np.dtype(dtype).kind == "f":
        operands[1][:3] = [np.nan, -0.0, np.inf]
        operands[3][:3] = [-np.inf, 0.0, np.nan]
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
    assert plain.tobytes() == observed.tobytes()
    expected = operands[0].copy()
    for operand in operands[1:]:
        reference.reduce_into(expected, operand, op)
    assert plain.tobytes() == expected.tobytes()


def test_plain_ufunc_only_for_numpy_arrays_and_unobserved_threads():
    a = np.ones(3)
    assert plain_ufunc("sum", a, a) is np.add and plain_ufunc("max", a) is np.maximum
    assert plain_ufunc("sum", a, memoryview(a)) is None
    with reductions_through(lambda *args: None):
        assert plain_ufunc("sum", a, a) is None


def test_copy_to_receives_the_result():
    operands = [np.full(4, float(j)) for j in range(3)]
    result, copy = np.empty(4), np.zeros(4)
    reduce_ordered(result, operands, "sum", copy_to=copy)
    assert np.array_equal(copy, np.full(4, 3.0)) and np.array_equal(result, copy)
