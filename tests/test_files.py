"""The one atomic write (files.py): a reader sees the old file or the new one, never a part; a
failed write leaves the old file and no temporary name; a secret is 0600 from its first byte."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfcolab.files import is_temp_name, put_in_place, temp_name, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary_name(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "manifest.json"
    assert write_atomic(dest, [b"one", b"two"]) == 6
    assert write_atomic(dest, [b"three"]) == 5
    assert dest.read_bytes() == b"three"
    assert os.listdir(dest.parent) == ["manifest.json"]


def test_write_atomic_that_fails_midway_keeps_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "connection.json"
    write_atomic(dest, [b"old"])

    def chunks() -> Iterator[bytes]:
        yield b"half of the new"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(dest, chunks())
    assert dest.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["connection.json"]


def test_write_atomic_with_a_mode_creates_the_temporary_file_with_it(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)  # a umask that takes bits must not matter either
    try:
        write_atomic(tmp_path / "public", [b"x"], mode=0o644)
    finally:
        os.umask(old_umask)
    write_atomic(tmp_path / "secret", [b"key"], mode=0o600)
    assert stat.S_IMODE((tmp_path / "public").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_temporary_names_are_recognised(tmp_path: Path) -> None:
    name = temp_name(tmp_path / "manifest.json").name
    assert name.startswith(".manifest.json") and is_temp_name(name)
    assert not is_temp_name("manifest.json") and not is_temp_name(".hidden")


def test_put_in_place_renames_a_finished_file_over_the_old_one(tmp_path: Path) -> None:
    (tmp_path / "cloudflared").write_bytes(b"old")
    part = tmp_path / "cloudflared.abc.part"
    part.write_bytes(b"new")
    put_in_place(part, tmp_path / "cloudflared")
    assert (tmp_path / "cloudflared").read_bytes() == b"new" and not part.exists()
