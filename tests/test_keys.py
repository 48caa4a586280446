"""The access key on the command line: `mfcolab key`, `mfcolab rotate-key`, the masked key in `up`'s
summary, and `connect --key-file` (a file, or stdin with -). Real CLI processes, a real front door."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers import free_port, wait_until
from stack_helpers import mfcolab

from mfcolab import credentials
from mfcolab.supervisor import stack
from mfcolab.web.sessions import SessionStore
from mfcolab.settings import Settings
from mfcolab.supervisor.status import StackStatus


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    settings = Settings.resolve(root=root, local=tmp_path / "local")
    credentials.access_key(settings)
    credentials.publish_connection(settings, "http://127.0.0.1:9", credentials.access_key(settings))
    SessionStore(settings.sessions_file).open(credentials.access_key(settings))
    return root


def env_for(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MFCOLAB_LOCAL": str(tmp_path / "local"), "METAFLOW_HOME": str(tmp_path / "mfhome")}


def test_key_prints_the_key_and_the_summary_only_masks_it(root: Path, tmp_path: Path) -> None:
    key = (root / "access_key").read_text().strip()
    printed = mfcolab("key", "--root", str(root), "--local", str(tmp_path / "local"), env=env_for(tmp_path)).stdout
    assert printed.strip() == key
    settings = Settings.resolve(root=root, local=tmp_path / "local")
    summary = "\n".join(stack.summary_lines(settings, StackStatus(supervisor_pid=0, started_at=0.0, public_url="https://x.trycloudflare.com")))
    assert key not in summary and "mfcolab key" in summary and key[:4] in summary


def test_key_without_a_key_is_one_line(tmp_path: Path) -> None:
    answer = mfcolab("key", "--root", str(tmp_path / "empty"), env=env_for(tmp_path), check=False)
    assert answer.returncode == 1 and "mfcolab up" in answer.stderr and "Traceback" not in answer.stderr


def test_rotate_key_replaces_key_sessions_and_connection(root: Path, tmp_path: Path) -> None:
    old = (root / "access_key").read_text().strip()
    answer = mfcolab("rotate-key", "--root", str(root), "--local", str(tmp_path / "local"), env=env_for(tmp_path))
    new = (root / "access_key").read_text().strip()
    assert new and new != old
    assert new not in answer.stdout + answer.stderr and old not in answer.stdout + answer.stderr
    record = json.loads((root / "connection.json").read_text())
    assert record["key"] == new and record["url"] == "http://127.0.0.1:9"
    assert len(SessionStore(root / "sessions.json")) == 0
    for name in ("access_key", "connection.json", "sessions.json"):
        assert (root / name).stat().st_mode & 0o777 == 0o600, name


@pytest.fixture
def door(root: Path, tmp_path: Path) -> Iterator[str]:
    """The web process as the supervisor runs it; the official engine's /metadata is only forwarded
    (to nothing here), so no database is needed for /login and the key check."""
    port = free_port()
    env = {**os.environ, **Settings.resolve(root=root, local=tmp_path / "local", port=port, tunnel=False,
                                               engine="official", ui="none", service_port=free_port()).to_env()}
    with open(tmp_path / "web.log", "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "mfcolab.web.server"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url) or child.poll() is not None, timeout=30, what="the front door")
        assert child.poll() is None, (tmp_path / "web.log").read_text()
        yield url
    finally:
        child.terminate()
        child.wait(10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).ok
    except requests.RequestException:
        return False


def test_a_running_door_refuses_the_old_key_and_sessions_after_rotate_key(root: Path, tmp_path: Path, door: str) -> None:
    old = (root / "access_key").read_text().strip()
    signed_in = requests.Session()
    assert signed_in.post(door + "/login", data={"key": old}, allow_redirects=False).status_code == 303
    assert signed_in.get(door + "/nowhere").status_code == 404
    mfcolab("rotate-key", "--root", str(root), env=env_for(tmp_path))
    new = (root / "access_key").read_text().strip()
    wait_until(lambda: signed_in.get(door + "/nowhere").status_code == 401, timeout=10, what="sessions to end")
    wait_until(lambda: requests.get(door + "/nowhere", headers={"x-api-key": old}).status_code == 401, timeout=10,
               what="the door to read the new key (at most a second after it is written)")
    assert requests.get(door + "/nowhere", headers={"x-api-key": new}).status_code == 404
    assert signed_in.get(door + "/nowhere").status_code == 401


@pytest.mark.parametrize("from_stdin", [False, True])
def test_connect_takes_the_key_from_a_file_or_stdin(tmp_path: Path, from_stdin: bool) -> None:
    key = "file-key-0123456789"
    key_file = tmp_path / "key.txt"
    key_file.write_text(key + "\n")
    args = ["connect", "http://127.0.0.1:9", "--key-file", "-" if from_stdin else str(key_file)]
    result = subprocess.run([sys.executable, "-m", "mfcolab", *args], input=key + "\n" if from_stdin else "",
                            capture_output=True, text=True, env=env_for(tmp_path), timeout=60, check=False)
    # Nothing listens on port 9: the key was read, and the ping is what fails, in one line.
    assert result.returncode == 1 and "does not answer" in result.stderr, result.stderr
    empty = subprocess.run([sys.executable, "-m", "mfcolab", "connect", "http://127.0.0.1:9", "--key-file", "-"],
                           input="", capture_output=True, text=True, env=env_for(tmp_path), timeout=60, check=False)
    assert empty.returncode == 1 and "does not hold one key" in empty.stderr

