"""The same checks under real mpirun jobs, including non-power-of-two worlds."""
import pytest

from tests.mpirun import mpirun

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_collective_under_mpirun(n):
    result = mpirun(n, "-m", "tests.mpi_check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"mpi_check ok {n}" in result.stdout
