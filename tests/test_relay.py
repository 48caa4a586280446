"""The relay of `connect --watch` as a real process: it follows <root>/connection.json, passes the key
and streamed bodies on, answers 503 with a message while the upstream is away, and is started,
reused and stopped by `mfcolab connect`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from helpers import free_port, wait_until
from mfcolab.supervisor.process import pid_alive
from mfcolab.client.relay import STATUS_PATH, ConnectionSource
from stack_helpers import mfcolab

KEY = "relay-test-key"


class Service(ThreadingHTTPServer):
    """A stand-in upstream: /metadata/ping like the service, 530 on /gone, and an echo of everything else."""

    daemon_threads = True

    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        super().__init__(("127.0.0.1", port), ServiceHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class ServiceHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Service

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/metadata/ping":
            if self.headers.get("x-api-key") != KEY:
                return self.reply(401, {"message": "bad key"})
            return self.reply(200, "pong", METADATA_SERVICE_VERSION="2.5.0")
        if self.path == "/gone":
            return self.reply(530, "error code: 1033")
        self.reply(200, self.echo(b""))

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.reply(200, self.echo(body))

    def echo(self, body: bytes) -> dict[str, object]:
        return {"service": self.server.name, "method": self.command, "path": self.path,
                "key": self.headers.get("x-api-key"), "length": len(body), "sha": hashlib.sha256(body).hexdigest()}

    def reply(self, status: int, body: object, **headers: str) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def publish(root: Path, url: str, key: str = KEY) -> None:
    """What the supervisor does: connection.json, replaced in one rename."""
    root.mkdir(parents=True, exist_ok=True)
    record = {"url": url, "service_url": url + "/metadata", "key": key, "datastore_root": str(root / "datastore")}
    tmp = root / ".connection.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, root / "connection.json")


@pytest.fixture
def services() -> Iterator[list[Service]]:
    made = [Service("a"), Service("b")]
    yield made
    for service in made:
        service.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[str]:
    """`mfcolab relay` (what `connect --watch` starts detached) in the foreground, as a child process."""
    port = free_port()
    log = open(tmp_path / "relay.log", "ab")
    child = subprocess.Popen([sys.executable, "-m", "mfcolab", "relay", "--root", str(tmp_path / "root"),
                              "--relay-port", str(port), "--folder", str(tmp_path / "relay")],
                             stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: (tmp_path / "relay" / "relay.json").exists() or child.poll() is not None, timeout=30,
               what="the relay to listen")
    assert child.poll() is None, (tmp_path / "relay.log").read_text()
    yield url
    child.terminate()
    assert child.wait(10) == 0
    log.close()
    assert not (tmp_path / "relay" / "relay.json").exists(), "the relay removes its state file when it stops"


def test_relay_forwards_key_body_and_query_and_follows_a_new_url(tmp_path: Path, services: list[Service], relay: str) -> None:
    a, b = services
    publish(tmp_path / "root", a.url)
    body = os.urandom(3 * 1024 * 1024)
    answer = requests.post(relay + "/metadata/flows/F/run?x=1&y=%2F", data=body, headers={"x-api-key": KEY}, timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"service": "a", "method": "POST", "path": "/metadata/flows/F/run?x=1&y=%2F", "key": KEY,
                             "length": len(body), "sha": hashlib.sha256(body).hexdigest()}

    publish(tmp_path / "root", b.url)  # the tunnel restarted: a new URL
    wait_until(lambda: requests.get(relay + "/metadata/flows", timeout=5).json()["service"] == "b", timeout=10,
               what="the relay to follow the new URL")
    status = requests.get(relay + STATUS_PATH, timeout=5).json()
    assert status["upstream"] == b.url and status["root"] == str(tmp_path / "root") and status["problem"] == ""


def test_relay_sends_a_rotated_key_for_a_client_that_has_an_older_one(
    tmp_path: Path, services: list[Service], relay: str
) -> None:
    a, _ = services
    publish(tmp_path / "root", a.url, key="old-key")
    assert requests.get(relay + "/metadata/x", headers={"x-api-key": "old-key"}, timeout=5).json()["key"] == "old-key"
    publish(tmp_path / "root", a.url, key="new-key")  # `mfcolab rotate-key` on the CPU side
    wait_until(lambda: requests.get(relay + "/metadata/x", headers={"x-api-key": "old-key"}, timeout=5).json()["key"]
               == "new-key", timeout=10, what="the relay to send the new key")
    assert requests.get(relay + "/metadata/x", headers={"x-api-key": "new-key"}, timeout=5).json()["key"] == "new-key"
    stranger = requests.get(relay + "/metadata/x", headers={"x-api-key": "guessed"}, timeout=5).json()
    assert stranger["key"] == "guessed", "a key the relay never saw is passed on as it is, to be refused"
    assert requests.get(relay + "/metadata/x", timeout=5).json()["key"] is None


def test_relay_answers_503_with_a_message_while_there_is_no_upstream(tmp_path: Path, relay: str) -> None:
    root = tmp_path / "root"
    missing = requests.get(relay + "/metadata/ping", timeout=5)
    assert missing.status_code == 503
    assert "has not published a URL" in missing.json()["message"]

    root.mkdir()
    (root / "connection.json").write_text("{half a file")
    wait_until(lambda: "unreadable" in requests.get(relay + "/x", timeout=5).json()["message"], timeout=10,
               what="the relay to report the unreadable file")

    port = free_port()
    publish(root, f"http://127.0.0.1:{port}")  # published, but nothing answers there (tunnel restarting)

    def refused() -> bool:
        answer = requests.get(relay + "/metadata/ping", headers={"x-api-key": KEY}, timeout=15)
        return answer.status_code == 503 and f"127.0.0.1:{port}" in answer.json()["message"]

    wait_until(refused, timeout=20, what="a 503 naming the unreachable URL")
    back = Service("back", port)
    try:
        answer = requests.get(relay + "/metadata/ping", headers={"x-api-key": KEY}, timeout=5)
        assert answer.status_code == 200 and answer.headers["METADATA_SERVICE_VERSION"] == "2.5.0"
    finally:
        back.close()


def test_relay_turns_cloudflares_530_into_503(tmp_path: Path, services: list[Service], relay: str) -> None:
    publish(tmp_path / "root", services[0].url)
    wait_until(lambda: requests.get(relay + "/ok", timeout=5).status_code == 200, timeout=10, what="the relay")
    gone = requests.get(relay + "/gone", timeout=5)
    assert gone.status_code == 503
    assert "530" in gone.json()["message"]


def test_connection_source_stats_at_most_every_interval(tmp_path: Path) -> None:
    now = [100.0]
    source = ConnectionSource(tmp_path, check_interval=0.5, clock=lambda: now[0])
    assert source.current() is None and "has not published" in source.problem
    publish(tmp_path, "http://127.0.0.1:1")
    assert source.current() is None, "within the interval the last answer stands"
    now[0] += 0.5
    assert source.current() is not None and source.current().url == "http://127.0.0.1:1"
    publish(tmp_path, "https://new-name.trycloudflare.com")
    assert source.current(force=True).url == "https://new-name.trycloudflare.com"
    (tmp_path / "connection.json").write_text(json.dumps({"url": "not a url"}))
    assert source.current(force=True).url == "https://new-name.trycloudflare.com", "a bad record keeps the last URL"
    assert "unreadable" in source.problem


# ---- `mfcolab connect --watch` ----------------------------------------------------------------------


def gpu_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "MFCOLAB_"))}
    env["METAFLOW_HOME"] = str(tmp_path / "metaflow-home")
    return env


def relay_pid(local: Path) -> int:
    return int(json.loads((local / "relay" / "relay.json").read_text())["pid"])


def test_connect_watch_starts_a_relay_reuses_it_and_stops_it(tmp_path: Path, services: list[Service]) -> None:
    root, local, port = tmp_path / "root", tmp_path / "gpu-local", free_port()
    publish(root, services[0].url)
    env = gpu_env(tmp_path)
    args = ["connect", "--root", str(root), "--watch", "--relay-port", str(port), "--local", str(local)]
    first = mfcolab(*args, env=env)
    assert "started a relay" in first.stderr and first.stdout.strip() == "export METAFLOW_PROFILE=mfcolab"
    profile = json.loads((tmp_path / "metaflow-home" / "config_mfcolab.json").read_text())
    assert profile["METAFLOW_SERVICE_URL"] == f"http://127.0.0.1:{port}/metadata"
    assert profile["METAFLOW_SERVICE_AUTH_KEY"] == KEY
    assert profile["METAFLOW_DATASTORE_SYSROOT_LOCAL"] == str(root / "datastore")
    assert int(profile["METAFLOW_SERVICE_RETRY_COUNT"]) > 5
    pid = relay_pid(local)
    assert os.getpgid(pid) == pid, "the relay runs in its own session, out of the caller's process group"

    second = mfcolab(*args, env=env)
    assert "reusing the relay" in second.stderr and relay_pid(local) == pid

    answer = requests.get(profile["METAFLOW_SERVICE_URL"] + "/ping", headers={"x-api-key": KEY}, timeout=5)
    assert answer.status_code == 200

    stopped = mfcolab("connect", "--stop-relay", "--local", str(local), env=env)
    assert stopped.stdout.strip() == "relay stopped"
    wait_until(lambda: not pid_alive(pid), timeout=30, what="the relay process to exit")
    assert not (local / "relay" / "relay.json").exists()
    assert "no relay was running" in mfcolab("connect", "--stop-relay", "--local", str(local), env=env).stdout


def test_connect_watch_says_plainly_when_the_cpu_side_is_down(tmp_path: Path) -> None:
    root, local = tmp_path / "root", tmp_path / "gpu-local"
    publish(root, f"http://127.0.0.1:{free_port()}")
    env = gpu_env(tmp_path)
    result = mfcolab("connect", "--root", str(root), "--watch", "--relay-port", str(free_port()), "--local", str(local),
                     env=env, check=False)
    assert result.returncode == 1
    assert "the CPU side is down or its tunnel is restarting" in result.stderr
    assert not (local / "relay" / "relay.json").exists(), "no relay is left behind"

    no_root = mfcolab("connect", "--watch", "--local", str(local), env=env, check=False)
    assert no_root.returncode == 1 and "--root" in no_root.stderr


def test_connect_watch_with_a_busy_relay_port_is_one_clear_line(tmp_path: Path, services: list[Service]) -> None:
    root = tmp_path / "root"
    publish(root, services[0].url)
    busy = services[1].server_address[1]
    result = mfcolab("connect", "--root", str(root), "--watch", "--relay-port", str(busy), "--local",
                     str(tmp_path / "gpu-local"), env=gpu_env(tmp_path), check=False)
    assert result.returncode == 1
    assert f"port {busy} for the relay is already in use" in result.stderr and "--relay-port" in result.stderr
