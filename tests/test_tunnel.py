"""The tunnel: log parsing, failure diagnosis, the component against the stand-in cloudflared
(tests/standins/cloudflared, a real child process), and finding or downloading the binary
(the download itself: test_download.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from helpers import ServedInThread, make_settings, wait_until
from test_download import DIGEST, PAYLOAD, FileServer

from mfcolab.errors import MissingBinaryError
from mfcolab.tunnel import (
    RATE_LIMITED,
    CloudflaredRelease,
    TunnelComponent,
    diagnose,
    find_cloudflared,
    installed_path,
    machine_arch,
    url_from_hostname,
    url_in_line,
    url_in_log,
)

STANDIN = Path(__file__).parent / "standins" / "cloudflared"

# Real lines: a Colab run of cloudflared 2022.12.1 (AsciiBox), and the current disclaimer.
REAL_START = """\
2023-01-16T08:32:54Z INF Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick way to experiment and try it out. However, be aware that these account-less Tunnels have no uptime guarantee, are subject to the Cloudflare Online Services Terms of Use (https://www.cloudflare.com/website-terms/), and Cloudflare reserves the right to investigate your use of Tunnels for violations of such terms. If you intend to use Tunnels in production you should use a pre-created named tunnel by following: https://developers.cloudflare.com/cloudflare-one/connections/connect-apps
2023-01-16T08:32:54Z INF Requesting new quick Tunnel on trycloudflare.com...
2023-01-16T08:32:58Z INF +--------------------------------------------------------------------------------------------+
2023-01-16T08:32:58Z INF |  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |
2023-01-16T08:32:58Z INF |  https://oklahoma-solo-younger-truck.trycloudflare.com                                     |
2023-01-16T08:32:58Z INF +--------------------------------------------------------------------------------------------+
2023-01-16T08:32:58Z INF Starting metrics server on 127.0.0.1:20241/metrics
2023-01-16T08:32:59Z INF Registered tunnel connection connIndex=0 connection=2b0a4a4e-5f1b-4a34-a1a4-0c0c4b5e7a11 event=0 ip=198.41.200.13 location=ams01 protocol=quic
"""
RATE_LIMIT_OUTPUT = """\
2026-05-29T09:25:34Z INF Requesting new quick Tunnel on trycloudflare.com...
2026-05-29T09:25:34Z ERR Error unmarshaling QuickTunnel response: error code: 1015 error="invalid character 'e' looking for beginning of value" status_code="429 Too Many Requests"
failed to unmarshal quick Tunnel: invalid character 'e' looking for beginning of value
"""


# ---- parsing the log ----------------------------------------------------------------------------


def test_url_in_line_reads_the_asciibox_url_row() -> None:
    line = "2023-01-16T08:32:58Z INF |  https://oklahoma-solo-younger-truck.trycloudflare.com                                     |"
    assert url_in_line(line) == "https://oklahoma-solo-younger-truck.trycloudflare.com"


def test_url_in_line_reads_logtable_rows_with_a_title_and_json_output() -> None:
    titled = [
        "2026-09-11T13:42:00Z INF +--------------------------------------------------------------------------------------------+",
        "2026-09-11T13:42:00Z INF |                                        Quick Tunnel                                        |",
        "2026-09-11T13:42:00Z INF +--------------------------------------------------------------------------------------------+",
        "2026-09-11T13:42:00Z INF |  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |",
        "2026-09-11T13:42:00Z INF |  https://amber-river-quiet-lamp.trycloudflare.com                                          |",
        "2026-09-11T13:42:00Z INF +--------------------------------------------------------------------------------------------+",
    ]
    assert [url_in_line(line) for line in titled] == [None, None, None, None, "https://amber-river-quiet-lamp.trycloudflare.com", None]
    as_json = '{"level":"info","time":"2026-09-11T13:42:00Z","message":"|  https://amber-river-quiet-lamp.trycloudflare.com  |"}'
    assert url_in_line(as_json) == "https://amber-river-quiet-lamp.trycloudflare.com"


@pytest.mark.parametrize(
    "line",
    [
        REAL_START.splitlines()[0],  # the disclaimer and its two links
        'failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": dial tcp: i/o timeout',
        '2026-05-29T09:25:34Z ERR failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": EOF',
        "2023-01-16T08:32:58Z INF |  https://api.trycloudflare.com  |",
        "2023-01-16T08:32:58Z INF https://oklahoma-solo-younger-truck.trycloudflare.com",
        "|  https://oklahoma-solo-younger-truck.trycloudflare.com  |",  # not a log line
        "2023-01-16T08:32:58Z INF |  https://oklahoma-solo-younger-truck.trycloudflare.com/path  |",
        "2023-01-16T08:32:58Z INF |  https://evil.example.com/x.trycloudflare.com  |",
        "2023-01-16T08:32:58Z INF |  http://oklahoma-solo-younger-truck.trycloudflare.com  |",
        'cloudflared_tunnel_user_hostnames_counts{userHostname="https://oklahoma-solo-younger-truck.trycloudflare.com"} 1',
    ],
)
def test_url_in_line_rejects_everything_but_the_boxed_tunnel_url(line: str) -> None:
    assert url_in_line(line) is None


def test_url_in_log_takes_the_last_boxed_url() -> None:
    later = REAL_START.replace("oklahoma-solo-younger-truck", "copper-meadow-signal-pixel")
    assert url_in_log(REAL_START) == "https://oklahoma-solo-younger-truck.trycloudflare.com"
    assert url_in_log(REAL_START + later) == "https://copper-meadow-signal-pixel.trycloudflare.com"
    assert url_in_log(REAL_START.splitlines()[0]) is None


def test_url_from_hostname_adds_the_scheme_and_refuses_junk() -> None:
    assert url_from_hostname("oklahoma-solo-younger-truck.trycloudflare.com") == "https://oklahoma-solo-younger-truck.trycloudflare.com"
    assert url_from_hostname("https://a-b.trycloudflare.com/") == "https://a-b.trycloudflare.com"
    assert url_from_hostname("") is None  # what a named (non-quick) tunnel answers
    assert url_from_hostname("not a host") is None


def test_diagnose_names_the_rate_limit() -> None:
    assert diagnose(RATE_LIMIT_OUTPUT) == RATE_LIMITED
    assert "1015" in RATE_LIMITED and "429" in RATE_LIMITED and "--no-tunnel" in RATE_LIMITED


def test_diagnose_other_failures_and_a_healthy_log() -> None:
    service = RATE_LIMIT_OUTPUT.replace("1015", "1101").replace("429 Too Many Requests", "500 Internal Server Error")
    assert "error 1101, HTTP 500 Internal Server Error" in (diagnose(service) or "")
    # cloudflared 2023.5 printed only the final line (cloudflare/cloudflared#972)
    old = "failed to unmarshal quick Tunnel: invalid character 'e' looking for beginning of value\n"
    assert "unreadable answer" in (diagnose(old) or "")
    network = 'failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": dial tcp: lookup api.trycloudflare.com: no such host\n'
    assert "could not reach api.trycloudflare.com" in (diagnose(network) or "")
    assert diagnose(REAL_START) is None


# ---- the component against the stand-in ------------------------------------------------------------


class Origin(ServedInThread):
    """The front door's place: answers /healthz with `status`."""

    def __init__(self) -> None:
        self.status = 200
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = b'{"status": "ok"}' if self.path == "/healthz" else b"{}"
                self.send_response(origin.status if self.path == "/healthz" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.port = self.serve(Handler)


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


class Tunnel:
    """A TunnelComponent on the stand-in, with the URLs it announced and its local edge."""

    def __init__(self, tmp: Path, origin: Origin, env: dict[str, str], verify: bool) -> None:
        self.edge_file = tmp / "edge.json"
        self.urls: list[str] = []
        settings = make_settings(tmp, port=origin.port, cloudflared=str(STANDIN))
        self.component = TunnelComponent(
            settings,
            self.urls.append,
            verify_through_tunnel=verify,
            route=self.route,
            extra_env={"STANDIN_EDGE_FILE": str(self.edge_file), **env},
            download=False,
        )

    def edge(self) -> dict[str, str]:
        return json.loads(self.edge_file.read_text())

    def route(self, url: str) -> str:
        """The public URL's local edge (trycloudflare.com does not resolve here)."""
        edge = self.edge()
        assert edge["url"] == url
        return edge["edge"]

    def metrics(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.component.port}{path}", timeout=2)

    def ready_status(self) -> int | None:
        """/ready's status, or None while the metrics server is not listening yet."""
        try:
            return self.metrics("/ready").status_code
        except requests.RequestException:
            return None

    def ready(self) -> bool:
        return self.ready_status() == 200


@pytest.fixture
def make_tunnel(tmp_path: Path, origin: Origin) -> Iterator[Callable[..., Tunnel]]:
    made: list[Tunnel] = []

    def make(verify: bool = True, **env: str) -> Tunnel:
        tunnel = Tunnel(tmp_path / f"t{len(made)}", origin, env, verify)
        made.append(tunnel)
        return tunnel

    yield make
    for tunnel in made:
        tunnel.component.stop(5)


def test_url_comes_from_the_metrics_server(make_tunnel: Callable[..., Tunnel]) -> None:
    tunnel = make_tunnel()
    tunnel.component.start()
    wait_until(tunnel.edge_file.exists, timeout=20, what="the stand-in's edge")
    tunnel.component.log_path.unlink()  # no log to read: the URL can only come from /quicktunnel
    expected = tunnel.edge()["url"]
    assert tunnel.metrics("/quicktunnel").json() == {"hostname": expected.removeprefix("https://")}
    wait_until(lambda: tunnel.component.current_url() == expected, timeout=20, what="the URL from /quicktunnel")
    wait_until(tunnel.component.healthy, timeout=20, what="tunnel healthy")
    assert tunnel.urls == [expected]
    assert tunnel.component.info()["url"] == expected
    assert "error" not in tunnel.component.info()


def test_url_falls_back_to_the_boxed_log_line(make_tunnel: Callable[..., Tunnel]) -> None:
    tunnel = make_tunnel(STANDIN_NO_QUICKTUNNEL="1")
    tunnel.component.start()
    wait_until(tunnel.edge_file.exists, timeout=20, what="the stand-in's edge")
    assert tunnel.metrics("/quicktunnel").status_code == 404
    wait_until(tunnel.component.healthy, timeout=20, what="tunnel healthy")
    assert tunnel.urls == [tunnel.edge()["url"]]


def test_ready_gates_health_and_publication(make_tunnel: Callable[..., Tunnel], tmp_path: Path) -> None:
    ready_file = tmp_path / "registered"
    tunnel = make_tunnel(STANDIN_READY_FILE=str(ready_file))
    tunnel.component.start()
    wait_until(lambda: tunnel.component.current_url() is not None, timeout=20, what="the URL")
    # cloudflared prints the URL before its metrics server listens
    wait_until(lambda: tunnel.ready_status() is not None, timeout=20, what="the metrics server")
    assert tunnel.ready_status() == 503
    assert not tunnel.component.healthy()
    assert tunnel.urls == []
    ready_file.touch()
    wait_until(tunnel.component.healthy, timeout=20, what="tunnel healthy")
    assert tunnel.metrics("/ready").json()["readyConnections"] == 1
    assert tunnel.urls == [tunnel.component.current_url()]


def test_health_needs_the_front_door_to_answer_through_the_tunnel(make_tunnel: Callable[..., Tunnel], origin: Origin) -> None:
    origin.status = 503
    tunnel = make_tunnel()
    tunnel.component.start()
    wait_until(tunnel.ready, timeout=20, what="/ready")
    assert not tunnel.component.healthy()
    assert tunnel.urls == []
    origin.status = 200
    wait_until(tunnel.component.healthy, timeout=20, what="tunnel healthy")
    assert requests.get(tunnel.edge()["edge"] + "/healthz", timeout=5).json() == {"status": "ok"}


def test_restart_after_sigkill_announces_the_new_url(make_tunnel: Callable[..., Tunnel]) -> None:
    tunnel = make_tunnel()
    component = tunnel.component
    component.start()
    wait_until(component.healthy, timeout=20, what="tunnel healthy")
    first = tunnel.edge()["url"]
    wait_until(component.healthy, timeout=20, what="tunnel healthy on a second check")
    assert tunnel.urls == [first]  # once per URL, however often health is checked
    first_metrics = component.port

    assert component.pid is not None
    os.killpg(component.pid, signal.SIGKILL)
    wait_until(lambda: not component.alive(), timeout=10, what="the tunnel to die")
    assert not component.healthy()

    component.start()
    assert component.current_url() != first
    wait_until(component.healthy, timeout=20, what="tunnel healthy again")
    second = tunnel.edge()["url"]
    assert second != first
    assert tunnel.urls == [first, second]
    assert component.info()["metrics"] == f"127.0.0.1:{component.port}"
    assert first_metrics is not None and component.port is not None


def test_rate_limit_failure_is_recognised(make_tunnel: Callable[..., Tunnel]) -> None:
    tunnel = make_tunnel(STANDIN_FAIL="1015")
    component = tunnel.component
    component.start()
    wait_until(lambda: not component.alive(), timeout=20, what="cloudflared to exit")
    assert component.process is not None and component.process.exit_code() == 1
    assert not component.healthy()
    info = component.info()
    assert info["url"] is None
    assert info["error"] == RATE_LIMITED
    assert tunnel.urls == []


def test_a_retry_shows_the_last_failure_until_it_has_a_url(make_tunnel: Callable[..., Tunnel]) -> None:
    tunnel = make_tunnel(STANDIN_FAIL="1015")
    component = tunnel.component
    component.start()
    wait_until(lambda: not component.alive(), timeout=20, what="cloudflared to exit")
    component.extra_env.update(STANDIN_FAIL="", STANDIN_REQUEST_SECONDS="600")  # the retry hangs in its request
    component.start()
    assert component.alive()
    assert component.info()["error"] == f"{RATE_LIMITED} (last attempt; trying again)"
    component.stop(5)
    component.extra_env.update(STANDIN_REQUEST_SECONDS="0.1")
    component.start()
    wait_until(component.healthy, timeout=20, what="tunnel healthy")
    assert "error" not in component.info()


def test_early_exit_without_a_known_cause_points_at_the_log(make_tunnel: Callable[..., Tunnel]) -> None:
    tunnel = make_tunnel(STANDIN_FAIL="1015")
    component = tunnel.component
    component.start()
    wait_until(lambda: not component.alive(), timeout=20, what="cloudflared to exit")
    component.log_path.write_text("")  # the output is gone: only the exit status is left to report
    assert component.info()["error"] == f"cloudflared exited with code 1 before creating a tunnel (see {component.log_path})"


def test_stop_is_graceful(make_tunnel: Callable[..., Tunnel]) -> None:
    tunnel = make_tunnel(verify=False)
    tunnel.component.start()
    wait_until(tunnel.component.healthy, timeout=20, what="tunnel healthy")
    tunnel.component.stop(5)
    assert tunnel.component.process is not None and tunnel.component.process.exit_code() == 0
    assert "Initiating graceful shutdown" in tunnel.component.log_path.read_text()


# ---- finding the binary ---------------------------------------------------------------------------


def test_missing_explicit_binary_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MissingBinaryError) as caught:
        find_cloudflared(tmp_path / "nope" / "cloudflared", tmp_path / "local")
    assert "nope/cloudflared" in caught.value.message
    assert "--cloudflared" in caught.value.hint and "\n" not in str(caught.value)


def test_missing_binary_without_download_names_the_fixes(tmp_path: Path) -> None:
    with pytest.raises(MissingBinaryError) as caught:
        find_cloudflared(None, tmp_path / "local", download=False, search_path=str(tmp_path))
    assert caught.value.hint == "pass --cloudflared PATH, or put cloudflared on PATH"


def test_component_start_fails_before_spawning_when_the_binary_is_missing(tmp_path: Path, origin: Origin) -> None:
    settings = make_settings(tmp_path, port=origin.port, cloudflared=str(tmp_path / "absent"))
    component = TunnelComponent(settings, lambda url: None)
    with pytest.raises(MissingBinaryError):
        component.start()
    assert component.process is None and not component.alive()


def test_binary_is_taken_from_path_then_from_the_local_install(tmp_path: Path) -> None:
    assert find_cloudflared(None, tmp_path / "local", download=False, search_path=str(STANDIN.parent)) == STANDIN
    target = installed_path(tmp_path / "local")
    target.parent.mkdir(parents=True)
    target.write_bytes(STANDIN.read_bytes())
    target.chmod(0o755)
    assert find_cloudflared(None, tmp_path / "local", download=False, search_path=str(tmp_path)) == target


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


def test_find_downloads_the_pinned_release_once(files: FileServer, tmp_path: Path) -> None:
    release = CloudflaredRelease(tag="2026.9.1", sha256={machine_arch(): DIGEST}, base_url=f"{files.base}/releases")
    local = tmp_path / "local"
    found = find_cloudflared(None, local, search_path=str(tmp_path), release=release, progress=False)
    assert found == installed_path(local) and found.read_bytes() == PAYLOAD
    assert files.requests == [(f"/releases/2026.9.1/cloudflared-linux-{machine_arch()}", None)]
    assert find_cloudflared(None, local, search_path=str(tmp_path), release=release, progress=False) == found
    assert len(files.requests) == 1


def test_find_reports_a_failed_download_as_a_missing_binary(files: FileServer, tmp_path: Path) -> None:
    wrong = hashlib.sha256(b"tampered").hexdigest()
    release = CloudflaredRelease(tag="2026.9.1", sha256={machine_arch(): wrong}, base_url=f"{files.base}/releases")
    with pytest.raises(MissingBinaryError, match="checksum mismatch") as caught:
        find_cloudflared(None, tmp_path / "local", search_path=str(tmp_path), release=release, progress=False)
    assert caught.value.hint == "pass --cloudflared PATH, or put cloudflared on PATH"
    assert not installed_path(tmp_path / "local").exists()
