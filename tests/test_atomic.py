"""emotion/atomic.py: a file replaced whole is never seen half-written, also with two writers of the same file."""
from pathlib import Path

import pytest

from emotion.atomic import atomic_write


def test_a_failed_write_leaves_the_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("before")

    def fails(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fails)
    assert path.read_text() == "before" and sorted(tmp_path.iterdir()) == [path]


def test_two_writers_of_one_file_do_not_take_each_others_temporary_file(tmp_path):
    """The processes of a multi-process run all save the shared face cache: one writer finishing while another is
    still writing must leave that one's file alone (with one temporary name, the second rename found nothing)."""
    path = tmp_path / "faces.npz"

    def slow(tmp: Path) -> None:
        tmp.write_text("first")
        atomic_write(path, lambda other: other.write_text("second"))  # another writer, done meanwhile
        assert tmp.read_text() == "first"

    atomic_write(path, slow)
    assert path.read_text() == "first" and sorted(tmp_path.iterdir()) == [path]
