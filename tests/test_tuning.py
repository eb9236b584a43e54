"""The cost model behind algorithm="auto"."""
import pytest

from collectives import tuning

ALLREDUCE = ["ring", "tree", "recursive_doubling", "rabenseifner"]


def test_small_messages_go_to_a_logarithmic_algorithm():
    assert tuning.choose("allreduce", ALLREDUCE, 8, 16) == "recursive_doubling"


def test_large_messages_go_to_a_bandwidth_optimal_algorithm():
    assert tuning.choose("allreduce", ALLREDUCE, 256 << 20, 16) in ("ring", "rabenseifner")


def test_ring_formula_is_the_textbook_one():
    model = tuning.CostModel(alpha=1.0, beta=0.5, gamma=0.25)
    n, m = 8, 1024
    expected = 2 * (n - 1) * 1.0 + 2 * (n - 1) / n * m * 0.5 + (n - 1) / n * m * 0.25
    assert tuning.predict("allreduce", "ring", m, n, model) == pytest.approx(expected)


def test_non_power_of_two_costs_two_extra_steps_in_recursive_doubling():
    model = tuning.CostModel(alpha=1.0, beta=0.0, gamma=0.0)
    assert tuning.predict("allreduce", "recursive_doubling", 8, 8, model) == 3
    assert tuning.predict("allreduce", "recursive_doubling", 8, 12, model) == 5


def test_pipeline_chunks_grow_with_message_size_and_depth():
    small = tuning.pipeline_chunks(4096, 3, 1e-9)
    large = tuning.pipeline_chunks(64 << 20, 3, 1e-9)
    assert small == 1 and large > 1
    assert tuning.pipeline_chunks(64 << 20, 10, 1e-9) > large
    assert tuning.pipeline_chunks(64 << 20, 1, 1e-9) == 1


def test_tree_depth():
    assert [tuning.tree_depth(n, 2) for n in (1, 2, 3, 4, 7, 8)] == [0, 1, 1, 2, 2, 3]
    assert tuning.tree_depth(5, 1) == 4


def test_unknown_algorithm_has_no_formula():
    with pytest.raises(ValueError, match="no cost formula"):
        tuning.predict("allreduce", "butterfly", 8, 4)
