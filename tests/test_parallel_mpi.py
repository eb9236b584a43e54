"""Tensor and hybrid parallelism under real mpirun: the example trains, and the benchmark's
counted bytes equal the formulas."""
import re

import pytest

from tests.mpirun import mpirun

pytestmark = pytest.mark.mpi


def test_bench_parallel_bytes_match_the_formulas():
    result = mpirun(4, "-m", "bench.parallel", "--dim", "32", "--hidden", "64", "--blocks", "3",
                    "--batch", "8", "--steps", "1", "--rounds", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^\s*(data parallel|hybrid|tensor parallel)\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d,]+\s+[\d.]+\s+"
                      r"([\d.]+)\s+([\d.]+)$", result.stdout, re.M)
    assert [r[0] for r in rows] == ["data parallel", "hybrid", "tensor parallel"], result.stdout
    for name, _tp, _dp, sent, predicted in rows:
        assert sent == predicted, f"{name}: sent {sent} MB, formula {predicted} MB"


def test_digits_tensor_parallel_example_trains():
    pytest.importorskip("sklearn")
    result = mpirun(4, "examples/train_digits_tp.py", "--tp", "2", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "tensor parallel over 2 x data parallel over 2" in result.stdout
    assert float(re.search(r"final test accuracy ([\d.]+)%", result.stdout).group(1)) > 85
