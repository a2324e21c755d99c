"""Bounded reads of regular files only (`edgefleet.kernel.fsutil.read_regular` / `copy_regular_synced`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefleet.kernel.errors import EdgefleetError, VerificationError
from edgefleet.kernel.fsutil import copy_regular_synced, read_regular

FIX = "replace it with the file"


def test_a_regular_file_within_the_cap_is_read_and_copied(tmp_path: Path) -> None:
    source = tmp_path / "a.json"
    source.write_bytes(b"12345")
    assert read_regular(source, max_bytes=5, fix=FIX) == b"12345"
    copy_regular_synced(source, tmp_path / "b.json", max_bytes=5, fix=FIX)
    assert (tmp_path / "b.json").read_bytes() == b"12345"


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink to a fifo"])
def test_what_is_not_a_regular_file_is_refused_naming_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "manifest.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(tmp_path / "pipe")
        path.symlink_to(tmp_path / "pipe")
    with pytest.raises(VerificationError, match="not a regular file") as caught:
        read_regular(path, max_bytes=10, fix=FIX, error_type=VerificationError)
    assert str(path) in caught.value.message and caught.value.fix == FIX


def test_a_file_over_the_cap_is_refused_and_no_copy_is_left(tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.write_bytes(b"x" * 11)
    with pytest.raises(EdgefleetError, match="11 bytes"):
        read_regular(source, max_bytes=10, fix=FIX)
    with pytest.raises(EdgefleetError, match="more than the 10"):
        copy_regular_synced(source, tmp_path / "copy", max_bytes=10, fix=FIX)
    assert not (tmp_path / "copy").exists()


def test_a_missing_file_is_left_to_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "nothing", max_bytes=10, fix=FIX)
