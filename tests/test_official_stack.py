"""`mfcolab up --engine official --ui official` through the real command, end to end.

The official image cannot be pulled here, so the stand-in registry on 127.0.0.1 serves a stand-in
image with the official image's layout (tests/registry), and udocker runs it with Debian's proot.
What runs is the user's path: `up` pulls in the foreground with progress, the detached supervisor
starts Postgres, both containers and the front door; `status`, `logs` and `down` cover the
containers; a second `up` reuses the pulled image and the created containers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from helpers import free_port, wait_until
from mfcolab.containers.udocker_client import container_processes
from mfcolab.supervisor.component import port_is_free
from mfcolab.supervisor.process import find_processes
from mfcolab.web.auth import COOKIE
from registry.fixtures import (
    INDEX_HTML,
    MAIN_JS,
    PYWEB,
    system_proot,
)
from registry.server import Registry
from stack_helpers import Stack, mfcolab

pytestmark = pytest.mark.slow

IMAGE = ":".join(PYWEB)
CONTAINERS = ("metadata", "ui-backend")


class OfficialStack(Stack):
    """A stack with the official engine and UI, pulled from the stand-in registry."""

    def __init__(self, tmp: Path, registry_url: str, *, image: str = IMAGE, proot: str | None = None,
                 engine: str = "official") -> None:
        self.service_port, self.ui_port = free_port(), free_port()
        super().__init__(tmp, free_port(), free_port(), extra=[
            "--engine", engine, "--ui", "official", "--registry", registry_url,
            "--proot", proot or system_proot(), "--image", image,
            "--service-port", str(self.service_port), "--ui-port", str(self.ui_port),
        ])

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}

    def get(self, path: str, *, auth: bool = True) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers if auth else {}, timeout=10)

    def containers(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.status()["components"] if c["name"] in CONTAINERS}


def stack_processes(stack: Stack) -> list[str]:
    """Every live process that names the stack's local folder (udocker's UDOCKER_DIR, proot's container
    ROOT, Postgres' data folder, the supervisor's and web process' settings), as "pid: command"."""
    marker = str(stack.local).encode()
    found = []
    for pid in find_processes(lambda cmdline, environ: marker in cmdline or marker in environ):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
        except OSError:
            continue  # ended meanwhile
        found.append(f"{pid}: {command}")
    return found


def service_pids(container_dir: Path) -> list[int]:
    """The containerized processes (they carry udocker's container_root), not proot or udocker."""
    pids = [pid for pid in container_processes(container_dir)
            if b"container_root=" in Path(f"/proc/{pid}/environ").read_bytes()]
    assert pids, f"nothing runs in {container_dir}"
    return pids


async def websocket_exchange(url: str, headers: dict[str, str]) -> tuple[str, str, str]:
    """(the greeting's type, the path the container saw, its echo of "subscribe")."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:
        hello = await ws.receive_json(timeout=10)
        await ws.send_str("subscribe")
        return hello["type"], hello["path"], await ws.receive_str(timeout=10)


def check_front_door(stack: OfficialStack) -> None:
    """Both containers behind the front door with the key, refused without it; the bundle at /."""
    pong = stack.get("/metadata/ping")
    assert (pong.text, pong.headers["METADATA_SERVICE_VERSION"]) == ("pong", "2.5.1")
    assert stack.get("/metadata/ping", auth=False).status_code == 401
    # The service answers only under its prefix, so the front door passed the path through unchanged.
    assert requests.get(f"http://127.0.0.1:{stack.service_port}/ping", timeout=10).status_code == 404
    seen = stack.get("/metadata/env").json()
    assert seen["argv"][0] == "/root/services/metadata_service/server.py"  # the official command, from /root
    assert seen["env"]["MF_METADATA_PORT"] == str(stack.service_port)
    assert seen["env"]["PATH_PREFIX"] == "/metadata"

    assert stack.get("/api/ping").text == "pong"
    assert stack.get("/api/ping", auth=False).status_code == 401
    seen = stack.get("/api/env").json()
    assert seen["argv"][0] == "/root/services/ui_backend_service/ui_server.py"
    assert seen["env"]["MF_UI_METADATA_PORT"] == str(stack.ui_port)
    assert seen["env"]["PATH_PREFIX"] == "/api"
    # The UI backend sees a copy of the datastore at the datastore's own path, kept current.
    artifact = stack.root / "datastore" / "HelloFlow" / "artifact.txt"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text("a run's artifact")

    def read_inside() -> str:
        return requests.get(f"{stack.url}/api/read", params={"path": str(artifact)}, headers=stack.headers,
                            timeout=10).text

    wait_until(lambda: read_inside() == "a run's artifact", timeout=60, what="the datastore view to copy a new file")
    # Neither container can change the datastore: the metadata service has none, the UI backend
    # writes to its copy as an unprivileged user and is refused.
    gone = requests.get(f"{stack.url}/metadata/read", params={"path": str(artifact)}, headers=stack.headers, timeout=10)
    assert gone.status_code == 404 and "No such file" in gone.json()["error"]
    refused = requests.post(f"{stack.url}/api/write", params={"path": str(artifact)}, data="overwritten",
                            headers=stack.headers, timeout=10)
    assert refused.status_code == 500 and artifact.read_text() == "a run's artifact"
    # Nor read the key, even on the host's side of proot (/proc/self/root is the host's /).
    for path in (stack.root / "access_key", Path(f"/proc/self/root{stack.root}/access_key")):
        denied = requests.get(f"{stack.url}/api/read", params={"path": str(path)}, headers=stack.headers, timeout=10)
        assert denied.status_code == 404 and stack.key not in denied.text, denied.text

    # Both WebSockets of the UI backend: live updates at /api/ws, and the artifact search.
    ws_url = f"{stack.url}/api/ws"
    assert asyncio.run(websocket_exchange(ws_url, stack.headers)) == ("HELLO", "/api/ws", "echo:subscribe")
    search = "/api/flows/HelloFlow/runs/1/search?key=alpha&value=1"
    assert asyncio.run(websocket_exchange(stack.url + search, stack.headers)) == ("HELLO", search, "echo:subscribe")
    for url in (ws_url, stack.url + search):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            asyncio.run(websocket_exchange(url, {}))
        assert refused.value.status == 401

    index = stack.get("/").text
    assert index.replace('<script>window.METAFLOW_SERVICE="/api";</script>', "") == INDEX_HTML
    assert stack.get("/runs/HelloFlow/1").text == index  # client-side routes get the page too
    assert stack.get("/static/js/main.js").text == MAIN_JS
    refused_page = stack.get("/", auth=False)
    assert refused_page.status_code == 401 and "window.METAFLOW_SERVICE" not in refused_page.text

    # A browser signs in once; its session cookie opens the UI, /api and the WebSocket (which
    # browsers open without custom headers).
    browser = requests.Session()
    signed_in = browser.post(f"{stack.url}/login", data={"key": stack.key, "next": "/"}, timeout=10)
    assert signed_in.status_code == 200 and signed_in.text == index
    assert browser.get(f"{stack.url}/api/ping", timeout=10).text == "pong"
    cookie = {"Cookie": f"{COOKIE}={browser.cookies[COOKIE]}"}
    assert asyncio.run(websocket_exchange(ws_url, cookie)) == ("HELLO", "/api/ws", "echo:subscribe")


def test_official_stack_up_status_logs_down_and_up_again(tmp_path: Path, registry: Registry) -> None:
    stack = OfficialStack(tmp_path, registry.url)
    try:
        registry.slow_blobs = 0.002  # long enough a pull for the display to show it moving
        first = stack.up()
        # The pull ran in the foreground, with progress on stderr, once for both containers.
        pulled = [line for line in first.stderr.splitlines() if line.startswith(f"pulling {IMAGE}:")]
        assert len(pulled) >= 2 and pulled[-1].endswith("done"), first.stderr
        shown = [float(line.split(": ")[1].split(" of ")[0]) for line in pulled]
        assert shown == sorted(shown) and shown[0] < shown[-1], pulled
        assert registry.hits["manifest pulls"] == 1 and registry.hits["blob"] >= 2
        assert stack.key not in first.stdout and stack.key[:4] in first.stdout and "mfcolab key" in first.stdout

        containers = stack.containers()
        assert {name: (c["state"], c["port"]) for name, c in containers.items()} == {
            "metadata": ("running", stack.service_port), "ui-backend": ("running", stack.ui_port)}
        for c in containers.values():
            assert Path(f"/proc/{c['pid']}").exists()
            assert c["image"] == f"{IMAGE} from {registry.url}"
            assert Path(c["udocker_dir"]) == stack.local / "udocker"

        logs = mfcolab("logs", "metadata", *stack.folder_args()).stdout
        assert f"test service listening on 127.0.0.1:{stack.service_port}/metadata" in logs
        logs = mfcolab("logs", "ui-backend", *stack.folder_args()).stdout
        assert f"test service listening on 127.0.0.1:{stack.ui_port}/api" in logs

        check_front_door(stack)
        # The Metaflow client's side: `connect` pings /metadata/ping and reads the service version.
        stack.client_env()
        profile = json.loads((stack.tmp / "metaflow-home" / "config_mfcolab.json").read_text())
        assert profile["METAFLOW_SERVICE_URL"] == f"{stack.url}/metadata"

        # A service that dies inside its container is restarted by the supervisor.
        metadata_dir = stack.local / "udocker" / "containers" / containers["metadata"]["container"]
        for pid in service_pids(metadata_dir):
            os.kill(pid, signal.SIGKILL)

        def restarted() -> bool:
            metadata = stack.containers()["metadata"]
            return metadata["restarts"] >= 1 and metadata["state"] == "running"

        wait_until(restarted, timeout=120, interval=0.25, what="the supervisor to restart the metadata container")
        assert stack.get("/metadata/ping").text == "pong"

        stack.down()
        assert stack_processes(stack) == []
        assert not stack.status()["running"]

        # The second up: no registry request at all, the same containers, and it serves again.
        registry.hits.clear()
        second = stack.up()
        assert sum(registry.hits.values()) == 0, registry.hits
        assert "pulling" not in second.stderr
        again = stack.containers()
        assert {name: c["container"] for name, c in again.items()} == {
            name: c["container"] for name, c in containers.items()}
        assert all(c["state"] == "running" for c in again.values())
        assert stack.get("/metadata/ping").text == "pong" and stack.get("/api/ping").text == "pong"
        assert 'window.METAFLOW_SERVICE="/api"' in stack.get("/").text

        # A supervisor killed outright leaves its components running (each in its own session);
        # `down` still finds and stops them, the container's processes included.
        os.kill(stack.status()["supervisor_pid"], signal.SIGKILL)
        wait_until(lambda: not stack.status()["running"], timeout=30, what="the supervisor to be gone")
        assert stack.get("/api/ping").text == "pong"
        assert "nothing is running" in stack.down().stdout
        assert stack_processes(stack) == []
    finally:
        stack.down(check=False)
    assert stack_processes(stack) == []


def test_official_ui_with_the_native_engine(tmp_path: Path, registry: Registry) -> None:
    stack = OfficialStack(tmp_path, registry.url, engine="native")
    try:
        stack.up()
        components = {c["name"]: c for c in stack.status()["components"]}
        assert list(components) == ["postgres", "ui-backend", "web"]
        assert components["ui-backend"]["state"] == "running" and components["web"]["engine"] == "native"
        # /metadata is the native service inside the web process: it writes to Postgres.
        created = requests.post(f"{stack.url}/metadata/flows/NativeFlow", json={}, headers=stack.headers, timeout=10)
        assert created.status_code == 200 and created.json()["flow_id"] == "NativeFlow"
        assert port_is_free(stack.service_port)  # no official service container
        assert stack.get("/api/ping").text == "pong"
        assert stack.get("/api/env").json()["env"]["MF_METADATA_DB_PORT"] == str(stack.pg_port)
        assert 'window.METAFLOW_SERVICE="/api"' in stack.get("/").text
    finally:
        stack.down(check=False)
    assert stack_processes(stack) == []


# -- what stops `up` with one clear line, leaving nothing running -----------------------------------


def assert_failed_cleanly(stack: Stack, result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in errors[0], result.stderr
    assert not (stack.local / "run" / "supervisor.pid").exists()
    assert not (stack.local / "pgdata").exists(), "nothing half-started"
    assert stack_processes(stack) == []
    return errors[0]


def test_unreachable_registry_is_one_clear_line(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    stack = OfficialStack(tmp_path, nobody)
    result = stack.up(check=False)
    assert_failed_cleanly(stack, result, "cannot reach the registry", nobody)


def test_rate_limited_registry_is_one_clear_line(tmp_path: Path, registry: Registry) -> None:
    registry.rate_limited = True
    stack = OfficialStack(tmp_path, registry.url)
    result = stack.up(check=False)
    assert_failed_cleanly(stack, result, "rate limit")
    assert "--registry public.ecr.aws/outerbounds" in result.stderr and "MFCOLAB_REGISTRY_USER" in result.stderr


def test_missing_image_is_one_clear_line(tmp_path: Path, registry: Registry) -> None:
    stack = OfficialStack(tmp_path, registry.url, image="test/absent:1")
    result = stack.up(check=False)
    assert_failed_cleanly(stack, result, "test/absent:1", "does not exist")


def test_refused_login_is_one_clear_line(tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.require_login = ("alice", "s3cret")
    monkeypatch.setenv("MFCOLAB_REGISTRY_USER", "alice")
    monkeypatch.setenv("MFCOLAB_REGISTRY_PASSWORD", "not-the-password")
    stack = OfficialStack(tmp_path, registry.url)
    result = stack.up(check=False)
    assert_failed_cleanly(stack, result, "refused the login of 'alice'")
    assert "MFCOLAB_REGISTRY_PASSWORD" in result.stderr and "not-the-password" not in result.stderr + result.stdout


def test_missing_proot_is_one_clear_line(tmp_path: Path, registry: Registry) -> None:
    stack = OfficialStack(tmp_path, registry.url, proot=str(tmp_path / "no-such-proot"))
    result = stack.up(check=False)
    assert_failed_cleanly(stack, result, "proot not found")
    assert "apt-get install proot" in result.stderr
    assert sum(registry.hits.values()) == 0


def test_taken_container_port_is_one_clear_line(tmp_path: Path, registry: Registry) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        stack = OfficialStack(tmp_path, registry.url)
        stack.extra[stack.extra.index("--ui-port") + 1] = str(busy.getsockname()[1])
        result = stack.up(check=False)
    assert_failed_cleanly(stack, result, "already in use")
    assert "--ui-port" in result.stderr
