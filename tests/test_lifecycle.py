"""`mfcolab up/down/status` as a user runs them, with real processes killed for real."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import requests

from mfcolab.supervisor.process import pid_alive as alive
from helpers import free_port, wait_until
from stack_helpers import Stack, mfcolab

pytestmark = pytest.mark.slow


def stack_pids(stack: Stack) -> list[int]:
    status = stack.status()
    return [status["supervisor_pid"]] + [c["pid"] for c in status["components"] if c.get("pid")]


def test_lifecycle_up_twice_status_and_down_leaves_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    first = stack.up()
    assert f"mfcolab connect --root {stack.root}" in first.stdout
    assert stack.key not in first.stdout and "mfcolab key" in first.stdout  # a saved notebook keeps no key
    assert oct((stack.root / "access_key").stat().st_mode & 0o777) == "0o600"
    connection = (stack.root / "connection.json")
    assert oct(connection.stat().st_mode & 0o777) == "0o600"
    record = __import__("json").loads(connection.read_text())
    assert record == {"url": stack.url, "service_url": stack.url + "/metadata", "key": stack.key,
                      "datastore_root": str(stack.root / "datastore")}

    status = stack.status()
    assert status["running"] and status["ready"]
    assert {c["name"]: c["state"] for c in status["components"]} == {"postgres": "running", "web": "running"}
    pids = stack_pids(stack)
    assert all(alive(pid) for pid in pids)
    private = [stack.local / "run" / "supervisor.pid", stack.local / "run" / "supervisor.lock",
               *sorted((stack.local / "logs").glob("*.log"))]
    assert len(private) >= 4
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in private} == {p.name: "0o600" for p in private}

    second = stack.up(check=False)
    assert second.returncode != 0
    assert "already running" in second.stderr and len(second.stderr.strip().splitlines()) <= 2
    assert all(alive(pid) for pid in pids), "a second up must not disturb the running stack"

    key_before = stack.key
    stack.down()
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30, what="every stack process to exit")
    assert not stack.status()["running"]
    assert mfcolab("status", *stack.folder_args(), check=False).returncode == 3

    # warm start: the same key, the same data; this time with a line per request in the web log
    stack.up(env={**os.environ, "MFCOLAB_ACCESS_LOG": "1"})
    assert stack.key == key_before
    assert requests.get(stack.url + "/metadata/ping", headers={"x-api-key": stack.key}, timeout=10).status_code == 200
    stack.down()
    web_log = (stack.local / "logs" / "web.log").read_text()
    assert '"GET /metadata/ping HTTP/1.1" 200' in web_log
    assert stack.key not in web_log


def test_lifecycle_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        stack = Stack(tmp_path, busy.getsockname()[1], free_port())
        result = stack.up(check=False)
    assert result.returncode == 1
    assert "already in use" in result.stderr and "--port" in result.stderr
    assert not (stack.local / "run" / "supervisor.pid").exists()
    assert not (stack.local / "pgdata").exists(), "nothing half-started"


def test_lifecycle_missing_root_is_one_clear_line(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    result = mfcolab("up", "--root", str(tmp_path / "not-mounted" / "Metaflow"), "--local", str(stack.local),
                     "--port", str(stack.port), "--no-tunnel", check=False)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "mount" in result.stderr
    assert not (tmp_path / "not-mounted").exists()


def test_lifecycle_unwritable_root_is_one_clear_line(tmp_path: Path) -> None:
    root = tmp_path / "readonly-root"
    root.mkdir()
    root.chmod(0o500)
    if os.access(root, os.W_OK):  # root bypasses modes; make the folder a file's child instead
        root.chmod(0o700)
        root = tmp_path / "a-file" / "root"
        (tmp_path / "a-file").write_text("not a folder")
    stack = Stack(tmp_path, free_port(), free_port())
    result = mfcolab("up", "--root", str(root), "--local", str(stack.local), "--port", str(stack.port), "--no-tunnel", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and "root" in result.stderr


def test_lifecycle_postgres_killed_while_serving_is_restarted(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    stack.up()
    try:
        headers = {"x-api-key": stack.key}
        assert requests.post(f"{stack.url}/metadata/flows/KillFlow", json={}, headers=headers, timeout=10).status_code == 200
        pg = next(c for c in stack.status()["components"] if c["name"] == "postgres")
        os.kill(pg["pid"], signal.SIGKILL)

        def recovered() -> bool:
            try:
                r = requests.post(f"{stack.url}/metadata/flows/KillFlow/run", json={"user_name": "t", "tags": [], "system_tags": []},
                                  headers=headers, timeout=5)
                return r.status_code == 200
            except requests.RequestException:
                return False

        wait_until(recovered, timeout=60, interval=0.25, what="the service to write again after Postgres was killed")
        status = stack.status()
        pg_after = next(c for c in status["components"] if c["name"] == "postgres")
        assert pg_after["restarts"] >= 1 and pg_after["pid"] != pg["pid"]
        assert requests.get(f"{stack.url}/metadata/flows/KillFlow", headers=headers, timeout=10).json()["flow_id"] == "KillFlow"
    finally:
        stack.down()


def test_lifecycle_survives_the_callers_process_group_dying(tmp_path: Path) -> None:
    """A notebook interrupt signals the kernel's process group: the stack is not in it."""
    stack = Stack(tmp_path, free_port(), free_port())
    stack.up()
    try:
        own_group = os.getpgrp()
        for pid in stack_pids(stack):
            assert os.getpgid(pid) != own_group
        assert requests.get(stack.url + "/healthz", timeout=5).status_code == 200
    finally:
        stack.down()


def test_lifecycle_up_after_the_supervisor_was_killed_cleans_up_and_starts(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    stack.up()
    status = stack.status()
    leftovers = [c["pid"] for c in status["components"]]
    os.kill(status["supervisor_pid"], signal.SIGKILL)
    wait_until(lambda: not alive(status["supervisor_pid"]), timeout=10, what="the supervisor to die")
    assert all(alive(pid) for pid in leftovers), "its components outlive it, holding their ports"
    try:
        stack.up()
        assert not any(alive(pid) for pid in leftovers)
        assert requests.get(stack.url + "/healthz", timeout=5).status_code == 200
    finally:
        stack.down()
