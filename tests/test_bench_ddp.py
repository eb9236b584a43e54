"""bench.ddp runs under mpirun and reports every configuration."""
import pytest

from tests.mpirun import mpirun

pytestmark = pytest.mark.mpi


def test_ddp_benchmark_reports_overlap_and_bucket_sweep():
    result = mpirun(2, "-m", "bench.ddp", "--features", "64", "--hidden", "128", "--layers", "2",
                    "--batch", "8", "--steps", "1", "--rounds", "1", "--buckets", "0.01,25", "--no-torch")
    assert result.returncode == 0, result.stdout + result.stderr
    for words in ("overlap, 0.01 MB buckets", "overlap, 25 MB buckets", "no overlap, 25 MB buckets",
                  "overlap speed-up", "hidden"):
        assert words in result.stdout, words
