"""bench.simulate --collective alltoall/gather/scatter: results checked, and the simulated
times of the single-port schedules equal their cost formulas. (Not the linear gather, nor
the tree gather on a non-power-of-two world: their root takes messages in another order
than they arrive, which the simulator's incoming-port approximation undercounts; see
collectives/transport/simulated.py.)"""
import io
import json

import pytest

from bench import simulate as bench_simulate


@pytest.mark.parametrize("collective, exact", [("alltoall", {"pairwise", "bruck", "linear"}),
                                               ("gather", {"tree"}), ("scatter", {"tree", "linear"})])
@pytest.mark.parametrize("n", [5, 16])
def test_simulated_times_equal_the_formulas(collective, exact, n, tmp_path):
    path = tmp_path / "rows.json"
    out = io.StringIO()
    assert bench_simulate.main(["-n", str(n), "--sizes", "1K,4M", "--collective", collective, "-r", "2",
                                "--json", str(path)], out=out) == 0
    assert "# Out of bounds values : 0 OK" in out.getvalue()
    rows = json.loads(path.read_text())["results"]
    assert {row["algorithm"] for row in rows} >= exact
    for row in rows:
        assert row["wrong"] == 0
        if row["algorithm"] in exact and not (collective == "gather" and n & (n - 1)):
            # rel 1e-3: a size not divisible by n rounds the simulated blocks
            assert row["time"] == pytest.approx(row["formula"], rel=1e-3), row
