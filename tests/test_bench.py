"""The benchmarks: their table, footer, JSON rows and result checking."""
import ast
import io
import json
from pathlib import Path

import numpy as np
import pytest

import collectives as cc
from bench.common import human, interleaved, placement, rank0_printer, size_sweep, slowest_median
from bench.harness import count_wrong, fill, parse_size, round_seconds, select_algorithms
from tests.mpirun import mpirun

BENCH = Path(__file__).resolve().parent.parent / "bench"

KEYS = {"size", "count", "dtype", "op", "algorithm", "time_us", "algbw", "busbw", "wrong"}


def test_parse_size_understands_units():
    assert [parse_size(s) for s in ("8", "64K", "16M", "1G", "4KB")] == [8, 65536, 16 << 20, 1 << 30, 4096]


def test_size_sweep_is_nccl_tests_b_e_f():
    assert size_sweep(8, 1024, 4) == [8, 32, 128, 512]
    assert size_sweep(1, 16, 2, smallest=4) == [4, 8, 16]
    with pytest.raises(SystemExit, match="-f must be at least 2"):
        size_sweep(8, 64, 1)


def test_human_sizes():
    assert [human(s) for s in (8, 1024, 830 << 10, 3 << 20, 1 << 30)] == [
        "8 B", "1 KiB", "830 KiB", "3 MiB", "1 GiB"]
    assert human(1536) == "1.5 KiB"


class GatheredPlacement:
    """A communicator stand-in whose allgather_object returns the given (host, cores) pairs."""

    def __init__(self, ranks):
        self.ranks, self.size = ranks, len(ranks)

    def allgather_object(self, mine):
        return self.ranks


def test_placement_warns_only_where_ranks_outnumber_a_hosts_cores():
    crowded = placement(GatheredPlacement([("a", [0, 1])] * 4))
    assert crowded.startswith("# placement: 4 ranks on 1 host (2 cores): 2 ranks per core")
    assert "take turns" in crowded
    # ranks bound to one core each: the host's cores are the union of the ranks' sets
    assert placement(GatheredPlacement([("a", [0]), ("a", [1])])) == "# placement: 2 ranks on 1 host (2 cores)"
    two_hosts = placement(GatheredPlacement([("a", [0, 1, 2, 3])] * 2 + [("b", [0])] * 3))
    assert two_hosts.startswith("# placement: 5 ranks on 2 hosts (2 on 4 cores, 3 on 1 core): 3 ranks per core")


def test_only_rank_zero_prints():
    shown, hidden = io.StringIO(), io.StringIO()
    rank0_printer(0, shown)("a", 1)
    rank0_printer(1, hidden)("a", 1)
    assert shown.getvalue() == "a 1\n" and hidden.getvalue() == ""


def test_interleaved_times_each_step_per_round_and_slowest_median_takes_the_slowest_rank():
    calls = []

    def body(comm):
        steps = {"a": lambda: calls.append("a") or comm.rank, "b": lambda: calls.append("b")}
        return interleaved(comm, steps, rounds=3, repeats=2)
    results = cc.run_threads(2, body)
    assert calls.count("a") == calls.count("b") == 2 * (1 + 3 * 2)       # warm-up + rounds x repeats
    for rank, samples in enumerate(results):
        assert [value for _, value in samples["a"]] == [rank] * 6 and len(samples["b"]) == 6
    assert slowest_median([[1.0, 5.0, 2.0], [3.0, 1.0, 1.0]]) == 3.0      # median of 3, 5, 2


def test_rounds_change_the_order_so_no_contender_always_follows_the_same_one():
    from bench.common import round_order
    keys = [(name, inplace) for name in "abcdefgh" for inplace in (False, True)]
    orders = [round_order(keys, index) for index in range(4)]
    assert orders[0] == keys and all(sorted(order) == sorted(keys) for order in orders)
    assert orders == [round_order(list(keys), index) for index in range(4)]
    for key in keys:
        before = {order[order.index(key) - 1] if order.index(key) else None for order in orders}
        assert len(before) > 1, key


def test_every_rank_takes_the_rounds_in_the_same_order_whatever_its_hash_seed():
    import subprocess
    import sys
    script = "from bench.common import round_order; print(round_order([('ring', 0), ('mpi', 1), 'x', 'y'], 3))"
    orders = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                             env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout for seed in "0123"}
    assert len(orders) == 1


def test_a_round_lasts_from_the_first_start_to_the_last_end_on_one_clock():
    # Two ranks sharing a core: the second starts only when the first is done.
    first, second = [(0.0, 1.0), (10.0, 11.0)], [(1.0, 2.0), (10.5, 12.0)]
    assert round_seconds([first, second], one_clock=True) == (2.0 - 0.0) + (12.0 - 10.0)
    # Clocks of different hosts cannot be compared: the slowest rank's own time.
    assert round_seconds([first, second], one_clock=False) == 1.0 + 1.5


def test_bench_common_is_a_leaf_and_harness_does_not_reach_into_explain():
    def bench_imports(name):
        tree = ast.parse((BENCH / f"{name}.py").read_text())
        return {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench")}
    assert bench_imports("common") == set()
    assert bench_imports("plot") == set()          # plot draws what it is given
    assert "bench.harness" not in bench_imports("simulate")


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
                  "# placement: 3 ranks on 1 host (",
                  "# Avg bus bandwidth", "x mpi)", "# Out of bounds values : 0 OK"):
        assert words in result.stdout, words
    data = json.loads(path.read_text())
    assert data["world_size"] == 3
    rows = data["results"]
    assert {r["algorithm"] for r in rows} == {"ring", "tree", "recursive_doubling", "rabenseifner",
                                              "oneshot", "twoshot", "shm_ring", "mpi", "mpi4py"}
    assert sorted({r["size"] for r in rows}) == [8, 64, 512, 4096]
    for row in rows:
        assert KEYS | {"inplace_" + k for k in KEYS - {"size", "count", "dtype", "op", "algorithm"}} <= set(row)
        assert row["wrong"] == 0 and row["inplace_wrong"] == 0
        assert row["busbw"] == pytest.approx(row["algbw"] * 2 * 2 / 3)
        assert row["algbw"] == pytest.approx(row["size"] / row["time_us"] / 1e3)


@pytest.mark.mpi
@pytest.mark.parametrize("name", ["reduce_scatter", "allgather", "broadcast", "reduce"])
def test_other_benchmarks_run_and_check(name, tmp_path):
    path = tmp_path / "rows.json"
    result = mpirun(3, "-m", f"bench.{name}", "-b", "8", "-e", "1K", "-f", "32", "-n", "2", "-w", "1",
                    "-d", "int32", "-o", "max", "-r", "2", "--json", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# Out of bounds values : 0 OK" in result.stdout
    rows = json.loads(path.read_text())["results"]
    assert {"mpi", "mpi4py"} <= {row["algorithm"] for row in rows}
    assert all(row["wrong"] in (0, None) and row["inplace_wrong"] in (0, None) for row in rows)
    assert "mpi4py: MPI's call straight from mpi4py" in result.stdout


def _rows(times):
    return [{"size": 8, "algorithm": name, "time_us": t, "busbw": 8 / t, "floor_us": 1.0, "wrong": 0,
             "inplace_wrong": None} for name, t in times.items()]


def test_best_of_ours_is_set_against_mpi_called_directly_and_through_the_engine():
    from bench.harness import format_footer
    rows = _rows({"ring": 50.0, "oneshot": 40.0, "nccl": 10.0, "mpi": 60.0, "mpi4py": 20.0})
    footer = format_footer(rows, ["ring", "oneshot", "nccl", "mpi", "mpi4py"], baselines=["nccl", "mpi4py"])
    line = next(text for text in footer.splitlines() if text.startswith("#            8 B"))
    assert line.split()[3] == "oneshot"                       # a baseline row is never "ours"
    assert "mpi4py      20.0 us  busbw ratio 0.50" in line and "mpi      60.0 us  busbw ratio 1.50" in line
    plain = format_footer(_rows({"ring": 50.0, "mpi": 60.0}), ["ring", "mpi"])
    assert "mpi4py" not in plain and "busbw ratio 1.20" in plain


def test_the_direct_mpi_row_is_offered_only_where_mpi_can_run_it_and_says_why_not():
    from argparse import Namespace

    from bench import mpi_direct

    class World:                    # this pytest process is a world of one rank
        size = 1
    said = []
    offer = mpi_direct.baseline("allreduce")
    arguments = dict(device="cpu", op="sum", datatype="float32")
    rows = offer(World(), Namespace(**arguments), said.append)
    x, out = np.arange(3, dtype=np.float32), np.zeros(3, np.float32)
    assert rows[mpi_direct.ROW](None, x, out, "sum", 0, False) is out and np.array_equal(out, x)
    assert rows[mpi_direct.ROW](None, x, None, "sum", 0, True) is x and said == []
    assert np.array_equal(x, np.arange(3))
    for change, reason in ((dict(op="avg"), "MPI has no op 'avg'"), (dict(device="gpu"), "CUDA-aware"),
                           (dict(), "the communicator has 2 of the 1 ranks")):
        World.size = 1 if change else 2
        assert offer(World(), Namespace(**{**arguments, **change}), said.append) == {}
        assert reason in said[-1] and said[-1].endswith("no mpi4py rows")
    World.size = 1
    gathers = mpi_direct.baseline("allgather")          # reduces nothing: any op
    assert mpi_direct.ROW in gathers(World(), Namespace(**{**arguments, "op": "avg"}), said.append)


@pytest.mark.mpi
def test_benchmark_rejects_unknown_algorithm():
    result = mpirun(2, "-m", "bench.allreduce", "-a", "ring,butterfly", "-e", "8")
    assert result.returncode != 0 and "butterfly" in result.stdout + result.stderr


def test_gpu_runs_are_offered_no_shared_memory_algorithm_and_are_told_why():
    from argparse import Namespace

    from bench.allreduce import ALLREDUCE

    def body(comm):
        gpu = select_algorithms(comm, ALLREDUCE, Namespace(device="gpu", algorithms="all"), [])
        with pytest.raises(SystemExit, match=r"\['oneshot'\] need host buffers"):
            select_algorithms(comm, ALLREDUCE, Namespace(device="gpu", algorithms="ring,oneshot"), [])
        return gpu, select_algorithms(comm, ALLREDUCE, Namespace(device="cpu", algorithms="all"), [])
    gpu, cpu = cc.run_threads(2, body, timeout=30)[0]
    assert "oneshot" in cpu and "twoshot" in cpu
    assert gpu == [a for a in cpu if a not in ("oneshot", "twoshot", "shm_ring")]


def test_percall_prints_our_fixed_cost_beside_mpi():
    import re

    from bench import percall
    out = io.StringIO()
    assert percall.main(["-n", "20", "-r", "1"], out=out) == 0
    assert re.search(r"comm.allreduce 8 B, 1 rank, algorithm auto: [\d.]+ us per call; "
                     r"MPI_Allreduce \(mpi4py\): [\d.]+ us", out.getvalue())
    for collective, mpi in (("broadcast", "Bcast"), ("allgather", "Allgather"),
                            ("reduce_scatter", "Reduce_scatter_block"), ("reduce", "Reduce")):
        assert re.search(rf"comm.{collective} 8 B, 1 rank, algorithm \w+: [\d.]+ us per call; "
                         rf"MPI_{mpi} \(mpi4py\): [\d.]+ us", out.getvalue())


@pytest.mark.mpi
def test_callpath_times_the_whole_call_the_oneshot_body_and_mpi_and_checks_them():
    import re
    result = mpirun(2, "-m", "bench.callpath", "-s", "8,64K,1M", "-n", "5", "-r", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "comm.allreduce  one-shot body   mpi4py  MPI/call  MPI/body #wrong" in result.stdout
    for size in (8, 65536):
        row = re.search(rf"^ +{size}( +[\d.]+){{5}} +(\d+)$", result.stdout, re.MULTILINE)
        assert row is not None and row.group(2) == "0", result.stdout
    assert re.search(r"# +1048576  the one-shot path does not apply here", result.stdout)
    off = mpirun(2, "-m", "bench.callpath", "-s", "8", "-n", "2", "-r", "1", env={"COLLECTIVES_SHM_BYTES": "0"})
    assert off.returncode == 0 and re.search(r"# +8  the one-shot path does not apply", off.stdout), off.stdout
