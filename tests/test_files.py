"""Atomic file writes (collectives.files): a reader sees the old file or the new one."""
import os

import pytest

from collectives.files import write_atomically


def test_writes_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    assert write_atomically(str(path), lambda handle: handle.write("new")) == str(path)
    assert path.read_text() == "new" and os.listdir(path.parent) == ["out.json"]


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.bin"
    write_atomically(path, lambda handle: handle.write(b"old"), binary=True)

    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError, match="mid-write"):
        write_atomically(path, broken, binary=True)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    stale = tmp_path / ".out.json.99999.tmp"
    stale.write_text("left by a killed writer")
    write_atomically(tmp_path / "out.json", lambda handle: handle.write("{}"))
    assert sorted(os.listdir(tmp_path)) == ["out.json"]
