"""bench.parallel --model gpt: the bytes each rank sends in a training step, counted at the
transport, equal the Megatron formulas written in bench/parallel_gpt.py, for every layout."""
import argparse
import re

import pytest

import collectives as cc
from bench import parallel_gpt
from tests.mpirun import mpirun

ARGS = argparse.Namespace(layers=2, heads=4, seq=8, vocab=24, dim=16, batch=4)


@pytest.mark.parametrize("tp,sequence_parallel", [(1, False), (2, False), (2, True), (4, False), (4, True)])
def test_counted_bytes_equal_the_formulas(tp, sequence_parallel):
    def body(comm):
        grid, model, step, _ = parallel_gpt.setup(comm, tp, sequence_parallel, ARGS)
        params = sum(p.size for p in model.module.parameters())
        return parallel_gpt.sent_per_step(grid, step), parallel_gpt.predicted_bytes(
            grid.tp_size, grid.dp_size, sequence_parallel, ARGS, params)
    for sent, predicted in cc.run_threads(4, body, timeout=60):
        assert sent == pytest.approx(predicted, rel=1e-12, abs=0) and sent > 0


@pytest.mark.mpi
def test_under_mpirun_every_row_matches_and_sequence_parallelism_keeps_fewer_activations():
    result = mpirun(4, "-m", "bench.parallel", "--model", "gpt", "--dim", "32", "--heads", "4", "--seq", "16",
                    "--batch", "8", "--vocab", "64", "--steps", "1", "--rounds", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {m[0].strip(): m[1:] for m in re.findall(r"^\s*([a-z +]+?)\s+\d+\s+\d+\s+[\d.]+\s+[\d,]+\s+([\d.]+)\s+"
                                                r"([\d.]+)\s+([\d.]+)$", result.stdout, re.M)}
    assert list(rows) == list(parallel_gpt.LAYOUTS), result.stdout
    for name, (_memory, sent, predicted) in rows.items():
        assert sent == predicted, f"{name}: sent {sent} MB, formula {predicted} MB"
    assert float(rows["tensor + sequence"][0]) < float(rows["tensor parallel"][0])
    assert float(rows["hybrid + sequence"][0]) < float(rows["hybrid"][0])
