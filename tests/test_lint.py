"""The linter is part of the test command: `ruff check .` with the rules in pyproject.toml."""
import shutil
import subprocess
import sys

from tests.mpirun import ROOT


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    command = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    result = subprocess.run([*command, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
