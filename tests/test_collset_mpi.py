"""The rest of the collective set under real mpirun jobs, against MPI's own collectives."""
import pytest

from tests.mpirun import mpirun

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_new_collectives_match_mpi_under_mpirun(n):
    result = mpirun(n, "-m", "tests.mpi_collset_check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"collset ok {n}" in result.stdout
