"""bench.alltoall, bench.gather and bench.scatter under mpirun: every algorithm and "mpi"
in one run, results checked (0 wrong), nccl-tests busbw = algbw * (n-1)/n in the JSON."""
import json

import pytest

from tests.mpirun import mpirun

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("name, algorithms", [("alltoall", {"pairwise", "bruck", "linear", "mpi", "mpi4py"}),
                                              ("gather", {"tree", "linear", "mpi", "mpi4py"}),
                                              ("scatter", {"tree", "linear", "mpi", "mpi4py"})])
def test_benchmark_runs_every_algorithm_against_mpi_and_checks_results(name, algorithms, tmp_path):
    out = tmp_path / f"{name}.json"
    result = mpirun(3, "-m", f"bench.{name}", "-b", "8", "-e", "4K", "-f", "8", "-n", "2", "-w", "1",
                    "-r", "2", "--json", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Out of bounds values : 0 OK" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert {row["algorithm"] for row in rows} == algorithms
    for row in rows:
        assert row["wrong"] == 0
        assert row["busbw"] == pytest.approx(row["algbw"] * 2 / 3)
