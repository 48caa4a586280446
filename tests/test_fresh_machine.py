"""What a user meets on a fresh Colab runtime: root, no Postgres system user yet, no user name.

The suite's own Postgres runs as the shared `mfcolab-pg` user, so the first-`up` test uses a
server user name that has never existed (MFCOLAB_PG_USER) and removes it afterwards.

The stacks live in `folder` (conftest.py), not in pytest's tmp_path.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers import free_port, wait_until
from stack_helpers import FLOWS, Stack, mfcolab

pytestmark = pytest.mark.slow

NO_USER_NAMES = ("USER", "USERNAME", "SUDO_USER", "LOGNAME")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def new_server_user() -> Iterator[str]:
    """A Postgres server user name that does not exist yet; the user is removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the server user is only created when mfcolab runs as root")
    name = f"mfcolab-t{uuid.uuid4().hex[:10]}"
    assert not _user_exists(name)
    yield name
    if _user_exists(name):
        uid = pwd.getpwnam(name).pw_uid
        wait_until(lambda: not _processes_of(uid), timeout=60, what=f"no process of {name}")
        subprocess.run(["userdel", name], check=True, capture_output=True)


def test_postgres_first_up_as_root_creates_the_server_user(folder: Path, new_server_user: str) -> None:
    stack = Stack(folder, free_port(), free_port())
    env = {**os.environ, "MFCOLAB_PG_USER": new_server_user}
    up = stack.up(check=False, env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "Traceback" not in up.stderr
        uid = pwd.getpwnam(new_server_user).pw_uid
        postgres = next(c for c in stack.status()["components"] if c["name"] == "postgres")
        assert postgres["state"] == "running"
        assert Path(f"/proc/{postgres['pid']}").stat().st_uid == uid, "Postgres runs as the new server user"
        assert (stack.local / "pgdata").stat().st_uid == uid
        ping = requests.get(f"{stack.url}/metadata/ping", headers={"x-api-key": stack.key}, timeout=10)
        assert ping.status_code == 200
    finally:
        stack.down(check=False)
    # The second up of the same runtime finds the user and the database it left.
    again = stack.up(check=False, env=env)
    try:
        assert again.returncode == 0, again.stderr
    finally:
        stack.down()


def _root_environment(tmp_path: Path) -> dict[str, str]:
    """A Colab shell: root, and none of the variables Metaflow takes a user name from."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "MFCOLAB_")) and k not in NO_USER_NAMES}
    env.update({"METAFLOW_HOME": str(tmp_path / "metaflow-home"), "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
def stack(folder: Path) -> Iterator[Stack]:
    stack = Stack(folder, free_port(), free_port())
    stack.up()
    yield stack
    stack.down(check=False)


def test_connect_as_root_names_a_user_and_a_flow_runs(tmp_path: Path, stack: Stack) -> None:
    env = _root_environment(tmp_path)
    connected = mfcolab("connect", "--root", str(stack.root), env=env)
    assert "'colab'" in connected.stderr and "--user" in connected.stderr
    profile = json.loads((tmp_path / "metaflow-home" / "config_mfcolab.json").read_text())
    assert profile["METAFLOW_USER"] == "colab"
    env["METAFLOW_PROFILE"] = "mfcolab"
    run = subprocess.run([sys.executable, str(FLOWS / "linear_flow.py"), "--no-pylint", "run", "--alpha", "4"],
                         check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    read = subprocess.run([sys.executable, "-c", ("from metaflow import Flow, namespace\nnamespace(None)\n"
                           "r = Flow('LinearFlow').latest_run\nprint(r.successful, r.data.message, sorted(r.system_tags))")],
                          check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    assert read.stdout.startswith("True plain:6") and "'user:colab'" in read.stdout


def test_connect_user_option_is_written_and_a_found_name_is_left_alone(tmp_path: Path, stack: Stack) -> None:
    env = _root_environment(tmp_path)
    profile = tmp_path / "metaflow-home" / "config_mfcolab.json"
    chosen = mfcolab("connect", "--root", str(stack.root), "--user", "ada", env=env)
    assert "'ada'" in chosen.stderr
    assert json.loads(profile.read_text())["METAFLOW_USER"] == "ada"
    # Where Metaflow finds a usable name itself, the profile does not override it.
    found = mfcolab("connect", "--root", str(stack.root), env={**env, "USERNAME": "grace"})
    assert "METAFLOW_USER" not in json.loads(profile.read_text())
    assert "recorded as user" not in found.stderr
