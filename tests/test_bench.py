"""The benchmarks: their table, footer, JSON rows and result checking."""
import json

import numpy as np
import pytest

from bench.harness import count_wrong, fill, parse_size
from tests.mpirun import mpirun

KEYS = {"size", "count", "dtype", "op", "algorithm", "time_us", "algbw", "busbw", "wrong"}


def test_parse_size_understands_units():
    assert [parse_size(s) for s in ("8", "64K", "16M", "1G", "4KB")] == [8, 65536, 16 << 20, 1 << 30, 4096]


def test_count_wrong_counts_only_real_errors():
    expected = np.array([1.0, 2.0, 3.0, 1000.0])
    assert count_wrong(np.array([1, 2, 3, 1000], np.float16), expected) == 0
    assert count_wrong(np.array([1, 2, 4, 1000], np.float32), expected) == 1
    assert count_wrong(np.array([1, 2, 3], np.float32), expected) == 4


def test_fill_is_exact_in_every_dtype():
    for dtype in ("float16", "int8", "uint8"):
        values = fill(3, 100, dtype, "sum")
        expected = fill(3, 100, "float64", "sum") + (5 if dtype == "uint8" else 0)
        assert np.array_equal(values.astype(np.float64), expected)


@pytest.mark.mpi
def test_allreduce_benchmark_writes_table_footer_and_json(tmp_path):
    path = tmp_path / "rows.json"
    result = mpirun(3, "-m", "bench.allreduce", "-b", "8", "-e", "4K", "-f", "8", "-n", "2", "-w", "1",
                    "--json", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    for words in ("time   algbw   busbw #wrong", "(us)  (GB/s)  (GB/s)", "# algorithm: rabenseifner",
                  "# Avg bus bandwidth", "x mpi)", "# Out of bounds values : 0 OK"):
        assert words in result.stdout, words
    data = json.loads(path.read_text())
    assert data["world_size"] == 3
    rows = data["results"]
    assert {r["algorithm"] for r in rows} == {"ring", "tree", "recursive_doubling", "rabenseifner", "mpi"}
    assert sorted({r["size"] for r in rows}) == [8, 64, 512, 4096]
    for row in rows:
        assert KEYS | {"inplace_" + k for k in KEYS - {"size", "count", "dtype", "op", "algorithm"}} <= set(row)
        assert row["wrong"] == 0 and row["inplace_wrong"] == 0
        assert row["busbw"] == pytest.approx(row["algbw"] * 2 * 2 / 3)
        assert row["algbw"] == pytest.approx(row["size"] / row["time_us"] / 1e3)


@pytest.mark.mpi
@pytest.mark.parametrize("name", ["reduce_scatter", "allgather", "broadcast", "reduce"])
def test_other_benchmarks_run_and_check(name):
    result = mpirun(3, "-m", f"bench.{name}", "-b", "8", "-e", "1K", "-f", "32", "-n", "2", "-w", "1",
                    "-d", "int32", "-o", "max", "-r", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# Out of bounds values : 0 OK" in result.stdout


@pytest.mark.mpi
def test_benchmark_rejects_unknown_algorithm():
    result = mpirun(2, "-m", "bench.allreduce", "-a", "ring,butterfly", "-e", "8")
    assert result.returncode != 0 and "butterfly" in result.stdout + result.stderr
