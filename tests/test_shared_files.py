"""Files read from the shared root folder (connection.json, access_key, sessions.json, the UI
bundle's recorded digest, the datastore) are hostile: a FIFO never blocks the reader, a symbolic
link is not followed, an oversized file is not read, and connection.json names an http(s) URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_settings, returned_or_raised
from mfcolab.client.relay import ConnectionSource
from mfcolab.containers import datastore_view
from mfcolab.containers.datastore_view import sync_view
from mfcolab.credentials import access_key, db_password, read_connection
from mfcolab.errors import ConfigError, UiBundleError
from mfcolab.replica import layout
from mfcolab.replica.writer import read_claim
from mfcolab.sharedfile import RefusedFile, read_regular
from mfcolab.web.auth import AccessKey
from mfcolab.web.sessions import SessionStore
from mfcolab.web.uibundle import digest_file, fetch_release

KEY = "k" * 43


def _secret(tmp_path: Path, text: str) -> Path:
    """A root-only file outside the shared folder."""
    secret = tmp_path / "outside" / "secret"
    secret.parent.mkdir()
    secret.write_text(text)
    secret.chmod(0o600)
    return secret


def test_read_regular_refuses_a_fifo_a_link_and_an_oversized_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused = returned_or_raised(lambda: read_regular(fifo, 100), fifo)
    assert isinstance(refused, RefusedFile) and refused.strerror == "it is not a regular file"
    link = tmp_path / "link"
    link.symlink_to(_secret(tmp_path, "secret"))
    with pytest.raises(RefusedFile, match="symbolic link"):
        read_regular(link, 100)
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    with pytest.raises(RefusedFile, match="symbolic link"):
        read_regular(zero, 100)
    big = tmp_path / "big"
    with open(big, "wb") as handle:
        handle.truncate(1 << 40)  # a sparse terabyte: refused from its size, never read
    with pytest.raises(RefusedFile, match="more than 100"):
        read_regular(big, 100)
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing", 100)
    (tmp_path / "plain").write_bytes(b"x" * 100)
    assert read_regular(tmp_path / "plain", 100) == b"x" * 100


# --- connection.json: `connect --root` and the relay ----------------------------------------------

def test_connection_json_that_is_a_link_to_a_record_elsewhere_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    record = _secret(tmp_path, json.dumps({"url": "http://127.0.0.1:1", "key": KEY}))
    (root / "connection.json").symlink_to(record)
    with pytest.raises(ConfigError, match="symbolic link"):
        read_connection(root)


@pytest.mark.parametrize("record", [
    {"url": "file:///etc/passwd", "key": KEY},
    {"url": "javascript:alert(1)", "key": KEY},
    {"url": "http://", "key": KEY},
    {"url": 7, "key": KEY},
    {"key": KEY},
    {"url": "http://127.0.0.1:1", "key": ["not", "text"]},
])
def test_connection_json_must_name_an_http_url_and_a_text_key(tmp_path: Path, record: dict[str, object]) -> None:
    (tmp_path / "connection.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="does not name an http"):
        read_connection(tmp_path)


def test_connect_answers_a_fifo_connection_json_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "connection.json")
    env = {**os.environ, "METAFLOW_HOME": str(tmp_path / "home")}
    try:
        done = subprocess.run([sys.executable, "-m", "mfcolab", "connect", "--root", str(root)], capture_output=True,
                              text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired:  # the command was killed
        raise AssertionError("mfcolab connect waited on a FIFO") from None
    assert done.returncode != 0
    assert "connection.json is unreadable: it is not a regular file" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_the_relay_keeps_its_url_when_connection_json_becomes_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / "connection.json"
    path.write_text(json.dumps({"url": "http://127.0.0.1:1", "key": KEY}))
    source = ConnectionSource(tmp_path)
    assert source.current(force=True) is not None
    path.unlink()
    os.mkfifo(path)
    upstream = returned_or_raised(lambda: source.current(force=True), path)
    assert upstream is not None and getattr(upstream, "url", None) == "http://127.0.0.1:1"
    assert "not a regular file" in source.problem


def test_the_relay_does_not_follow_a_non_http_url(tmp_path: Path) -> None:
    (tmp_path / "connection.json").write_text(json.dumps({"url": "file:///etc/shadow", "key": KEY}))
    source = ConnectionSource(tmp_path)
    assert source.current(force=True) is None and "http" in source.problem


# --- the front door: access_key and sessions.json -------------------------------------------------

def test_the_door_keeps_its_key_when_the_key_file_becomes_a_fifo_or_a_link(tmp_path: Path) -> None:
    key_file = tmp_path / "access_key"
    key_file.write_text(KEY + "\n")
    access = AccessKey(KEY, key_file=key_file)
    key_file.unlink()
    os.mkfifo(key_file)
    access._checked_at = float("-inf")  # noqa: SLF001 - look again now, not in a second
    assert returned_or_raised(lambda: access.key, key_file) == KEY
    key_file.unlink()
    key_file.symlink_to(_secret(tmp_path, "a-secret-that-is-not-the-key"))
    access._checked_at = float("-inf")  # noqa: SLF001
    assert access.key == KEY


def test_a_fifo_sessions_file_means_no_sessions_and_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    os.mkfifo(path)
    store = SessionStore(path)
    assert returned_or_raised(lambda: len(store), path) == 0


# --- the UI bundle's recorded digest --------------------------------------------------------------

def test_a_fifo_in_place_of_the_recorded_digest_is_no_digest(tmp_path: Path) -> None:
    archive = tmp_path / "ui" / "metaflow-ui-v1.3.14.zip"
    archive.parent.mkdir()
    archive.write_bytes(b"PK not really")
    os.mkfifo(digest_file(archive))
    refused = returned_or_raised(lambda: fetch_release("http://127.0.0.1:1/x.zip", archive, progress=False), digest_file(archive))
    assert isinstance(refused, UiBundleError) and "has no recorded digest" in refused.message


# --- the datastore view of the official UI backend ------------------------------------------------

def test_the_datastore_view_copies_no_link_or_fifo_even_one_swapped_in_while_it_copies(tmp_path: Path) -> None:
    """A file the walk saw as regular is a link to a root-only file, or a FIFO, by the time it is
    copied: nothing of it reaches the view (which every user can read)."""
    source, view = tmp_path / "datastore", tmp_path / "view"
    source.mkdir()
    secret = _secret(tmp_path, "root only")
    (source / "ok").write_text("artifact")
    swapped, fifo = source / "swapped", source / "fifo"
    regular = (source / "ok").lstat()
    swapped.symlink_to(secret)
    os.mkfifo(fifo)
    view.mkdir()
    assert datastore_view._copy(swapped, view / "swapped", regular) is False  # noqa: SLF001 - the copy step itself
    assert returned_or_raised(lambda: datastore_view._copy(fifo, view / "fifo", regular), fifo) is False  # noqa: SLF001
    assert sorted(p.name for p in view.iterdir()) == []
    result = sync_view(source, view)
    assert (view / "ok").read_text() == "artifact" and not (view / "swapped").exists() and not (view / "fifo").exists()
    assert result.files == 1


# --- the writer claim (which stack ships to the root folder) --------------------------------------

def test_a_fifo_or_a_link_in_place_of_the_writer_claim_reads_as_no_claim(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    claim = layout.writer_claim_path(settings)
    claim.parent.mkdir(parents=True)
    os.mkfifo(claim)
    assert returned_or_raised(lambda: read_claim(settings), claim) is None
    claim.unlink()
    claim.symlink_to(_secret(tmp_path, json.dumps({"stack": "s", "host": "h", "pid": 1, "since": 0.0})))
    assert read_claim(settings) is None


def test_up_and_key_refuse_a_fifo_or_a_link_in_place_of_a_secret_in_one_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.root.mkdir(parents=True)
    os.mkfifo(settings.key_file)
    refused = returned_or_raised(lambda: access_key(settings), settings.key_file)
    assert isinstance(refused, ConfigError) and refused.message == f"{settings.key_file} is refused: it is not a regular file"
    settings.db_password_file.symlink_to(_secret(tmp_path, "not the password"))
    with pytest.raises(ConfigError, match="is refused: it is a symbolic link"):
        db_password(settings)
