"""The README's examples run as written."""
import contextlib
import io
import os
import re
import subprocess

import pytest

from tests.mpirun import ROOT, mpirun

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_quick_start_has_exactly_the_two_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, re.S)[0].strip().splitlines()
    assert commands == ["pip install -e '.[mpi]' && mpirun -n 4 python -m bench.allreduce",
                        "pip install -e '.[mpi,test]' && python -m pytest"]


def test_in_process_example_prints_what_the_readme_says():
    snippet = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "run_threads" in b][0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet, {})
    assert printed.getvalue().strip() == "[ 0. 10. 20. 30.]"


@pytest.mark.mpi
def test_hello_example_under_mpirun():
    result = mpirun(4, "examples/hello_allreduce.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(expected 6)") == 8 and "gathered [0 1 2 3]" in result.stdout


def test_layout_names_every_file_in_the_repository():
    """Each tracked file's name appears in the README's Layout (tests/test_*.py by pattern)."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [path for path in listed.stdout.split()
               if not (path.startswith("tests/test_") and path.endswith(".py"))
               and os.path.basename(path) not in layout]
    assert not missing, f"README's Layout does not mention {missing}"
