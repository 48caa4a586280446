"""The in-process heartbeat against a stand-in heartbeat route on 127.0.0.1: the same request as
Metaflow's own heartbeat worker, the service's wait honoured, refusals retried, a last beat on
stop, and nothing printed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers import wait_until

from metaflow_extensions.mfcolab.plugins.heartbeat_thread import HeartbeatThread


class Route:
    """Records every request; answers with `status` and the double-encoded wait."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.wait = 0.05

    def handler(self) -> type[BaseHTTPRequestHandler]:
        route = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                route.requests.append({"path": self.path, "body": body, "headers": headers})
                answer = json.dumps(json.dumps({"wait_time_in_seconds": route.wait})).encode()
                self.send_response(route.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def route() -> Iterator[tuple[Route, str]]:
    route = Route()
    server = ThreadingHTTPServer(("127.0.0.1", 0), route.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield route, f"http://127.0.0.1:{server.server_address[1]}/flows/F/runs/7/steps/s/tasks/9/heartbeat"
    server.shutdown()
    thread.join()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing Metaflow in this process
def test_heartbeat_thread_sends_what_metaflows_worker_sends(route: tuple[Route, str]) -> None:
    from metaflow.metadata_provider.heartbeat import MetadataHeartBeat

    recorded, url = route
    stock = MetadataHeartBeat()
    stock.headers = {"x-api-key": "k"}
    stock.hb_url = url
    assert stock._heartbeat() == pytest.approx(recorded.wait)
    ours = HeartbeatThread(url, {"x-api-key": "k"})
    assert ours.beat() == pytest.approx(recorded.wait)
    theirs, mine = recorded.requests
    assert mine["path"] == theirs["path"] and mine["body"] == theirs["body"] == b"{}"
    assert mine["headers"] == theirs["headers"]


def test_heartbeat_thread_beats_on_the_services_wait(route: tuple[Route, str], capsys: pytest.CaptureFixture[str]) -> None:
    recorded, url = route  # the stand-in asks for a beat every 0.05 s: five arrive long before 10 s
    beating = HeartbeatThread(url, {})
    beating.start()
    wait_until(lambda: len(recorded.requests) >= 5, timeout=30, what="five beats")
    beating.terminate()
    assert not beating._thread.is_alive()
    assert capsys.readouterr() == ("", "")


def test_heartbeat_thread_sends_one_last_beat_when_stopped(route: tuple[Route, str]) -> None:
    recorded, url = route
    recorded.wait = 3600
    beating = HeartbeatThread(url, {})
    beating.start()
    wait_until(lambda: len(recorded.requests) == 1, timeout=30, what="the first beat")
    beating.terminate()
    assert len(recorded.requests) == 2 and not beating._thread.is_alive()


def test_heartbeat_thread_keeps_trying_after_refusals_silently(
        route: tuple[Route, str], capsys: pytest.CaptureFixture[str]) -> None:
    recorded, url = route
    recorded.status = 404  # "too recent", as the service answers right after a task is created
    beating = HeartbeatThread(url, {})
    beating.start()
    wait_until(lambda: len(recorded.requests) >= 2, timeout=30, what="a retried beat")
    recorded.status = 200
    seen = len(recorded.requests)
    wait_until(lambda: len(recorded.requests) >= seen + 3, timeout=30, what="beats on the normal schedule again")
    beating.terminate()
    assert capsys.readouterr() == ("", "")


def test_heartbeat_thread_unreachable_service_does_not_hold_up_the_end() -> None:
    beating = HeartbeatThread("http://127.0.0.1:9/heartbeat", {})  # the discard port: nothing listens
    beating.start()
    beating.terminate()
    assert not beating._thread.is_alive()
