"""bench.explain on all-to-all, gather and scatter: the schedules read back from the real
algorithms deliver what each collective promises, in the steps their docstrings say."""
import pytest

from bench.explain import schedule


def ceil_log2(n):
    return (n - 1).bit_length()


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("collective, algorithm, steps", [
    ("alltoall", "pairwise", lambda n: n - 1), ("alltoall", "bruck", ceil_log2),
    ("alltoall", "linear", lambda n: n - 1), ("gather", "tree", ceil_log2), ("scatter", "tree", ceil_log2),
    ("gather", "linear", lambda n: n - 1), ("scatter", "linear", lambda n: n - 1)])
def test_schedules_deliver_and_take_the_documented_steps(collective, algorithm, steps, n):
    s = schedule(algorithm, collective, n=n, count=n * n, root=n - 1)
    assert s.ok, f"{collective} {algorithm} n={n}"
    assert s.steps == steps(n), f"{collective} {algorithm} n={n}: {s.steps} steps"
