"""The front door against real servers on 127.0.0.1: real aiohttp stand-ins for the upstream
services (an HTTP echo/stream server and a WebSocket echo server), a real in-process sub-app for
/metadata, and real clients (requests for HTTP, aiohttp for WebSockets)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

from mfcolab.errors import ConfigError
from mfcolab.web.auth import COOKIE
from mfcolab.web.frontdoor import LOG_POLL_SCRIPT, StaticUI, Upstream, create_app, inject_service_url, make_runner

KEY = "k3y-Secret_9f8e7d6c5b4a"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LARGE = 50 * 1024 * 1024
BLOCK = hashlib.sha256(b"mfcolab").digest() * 2048  # 64 KiB of fixed bytes
INDEX_HTML = "<!doctype html><html><head><title>Metaflow</title></head><body><div id=root></div></body></html>"


# ---------------------------------------------------------------- harness


class ServerThread:
    """An event loop in a daemon thread that hosts real aiohttp servers on 127.0.0.1."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def serve(self, app: web.Application, door: bool = True) -> str:
        async def start() -> str:
            runner = make_runner(app) if door else web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.runners.append(runner)
            host, port = runner.addresses[0][:2]
            return f"http://{host}:{port}"

        return str(self.call(start()))

    def close(self) -> None:
        async def stop() -> None:
            for runner in reversed(self.runners):
                await runner.cleanup()

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def raw_exchange(base: str, payload: bytes) -> bytes:
    """Send raw bytes to a server and return what it answers (for requests no client library would make)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"Content-Length: " in chunks[0]:
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# ---------------------------------------------------------------- stand-ins


class Probe:
    """What the stand-ins saw, shared between the server thread and the tests."""

    def __init__(self) -> None:
        self.produced = 0
        self.client_sent = 0
        self.client_sent_at_first_upstream_byte: int | None = None
        self.ws_opened = 0
        self.ws_close_codes: list[int | None] = []
        self.ws_closed = threading.Event()


def upstream_app(probe: Probe) -> web.Application:
    """Stands in for the UI backend (PATH_PREFIX=/api) and the official metadata service (/metadata)."""

    async def echo(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_len": size,
                "body_sha256": digest.hexdigest(),
            }
        )

    async def upload(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            if probe.client_sent_at_first_upstream_byte is None:
                probe.client_sent_at_first_upstream_byte = probe.client_sent
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"body_len": size, "body_sha256": digest.hexdigest()})

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if "length" in request.query:
            response.content_length = size
        await response.prepare(request)
        probe.produced = 0
        with contextlib.suppress(ConnectionError):  # the door hung up: its client left
            while probe.produced < size:
                piece = BLOCK[: size - probe.produced]
                await response.write(piece)
                probe.produced += len(piece)
            await response.write_eof()
        return response

    async def break_off(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def status(request: web.Request) -> web.Response:
        response = web.Response(status=int(request.match_info["code"]), text="teapot")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=b"\x1f\x8b not really gzip", headers={"Content-Encoding": "gzip"})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        probe.ws_opened += 1
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT and message.data.startswith("close:"):
                await ws.close(code=int(message.data.split(":")[1]), message=b"asked to")
                break
            if message.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        probe.ws_close_codes.append(ws.close_code)
        probe.ws_closed.set()
        return ws

    app = web.Application()
    app.router.add_get("/api/download", download)
    app.router.add_post("/api/upload", upload)
    app.router.add_get("/api/break", break_off)
    app.router.add_get("/api/status/{code}", status)
    app.router.add_get("/api/gzip", gzipped)
    app.router.add_get("/api/ws", websocket)
    app.router.add_route("*", "/api/echo{tail:.*}", echo)
    app.router.add_route("*", "/metadata/{tail:.*}", echo)
    return app


def metadata_subapp() -> web.Application:
    """A small in-process stand-in for the native metadata service."""

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong", headers={"METADATA_SERVICE_VERSION": "2.5.1"})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "body": (await request.read()).decode()})

    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_route("*", "/echo", echo)
    app.router.add_post("/flows/{flow}", echo)
    return app


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.probe = Probe()
        self.servers = ServerThread()
        bundle = tmp / "ui"
        (bundle / "static" / "js").mkdir(parents=True)
        (bundle / "index.html").write_text(INDEX_HTML)
        (bundle / "static" / "js" / "main.js").write_text("console.log('ui');")
        (bundle / "favicon.ico").write_bytes(b"\x00\x01icon")
        (tmp / "secret.txt").write_text("outside the bundle")
        self.upstream = self.servers.serve(upstream_app(self.probe), door=False)
        self.door = self.servers.serve(
            create_app(KEY, metadata_subapp(), api=Upstream(self.upstream, "UI backend"), static_dir=bundle)
        )
        self.official = self.servers.serve(create_app(KEY, Upstream(self.upstream, "metadata service")))
        dead = closed_port_url()
        self.dead = self.servers.serve(
            create_app(KEY, Upstream(dead, "metadata service"), api=Upstream(dead, "UI backend"))
        )
        self.open = self.servers.serve(create_app(None, metadata_subapp()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    built = Stack(tmp_path_factory.mktemp("frontdoor"))
    yield built
    built.servers.close()


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def with_key(**headers: str) -> dict[str, str]:
    return {"x-api-key": KEY, **headers}


def login(http: requests.Session, base: str, **headers: str) -> requests.Response:
    return http.post(f"{base}/login", data={"key": KEY, "next": "/"}, headers=headers, allow_redirects=False)


def upstream_saw(answer: requests.Response) -> dict[str, Any]:
    seen = answer.json()
    seen["headers"] = {k.lower(): v for k, v in seen["headers"]}
    return seen


# ---------------------------------------------------------------- auth

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
GUARDED = [
    "/", "/index.html", "/favicon.ico", "/static/js/main.js", "/flows/HelloFlow/runs/3", "/nowhere",
    "/metadata", "/metadata/ping", "/metadata/echo", "/metadata/flows/HelloFlow", "/metadata/nowhere",
    "/api", "/api/echo", "/api/ws", "/api/download?size=10", "/healthzz", "/login/x",
]


@pytest.mark.parametrize("method", METHODS)
def test_every_route_and_method_is_refused_without_the_key(stack: Stack, http: requests.Session, method: str) -> None:
    for base in (stack.door, stack.official):
        for path in GUARDED:
            answer = http.request(method, base + path, allow_redirects=False)
            assert answer.status_code == 401, (base, method, path)
            if method != "HEAD":
                assert "access key" in answer.json()["message"]


WRONG = [
    {"x-api-key": ""},
    {"x-api-key": KEY + "x"},
    {"x-api-key": KEY[:-1]},
    {"x-api-key": KEY.upper()},
    {"X-API-KEY": "nope"},
    {"Cookie": f"{COOKIE}={KEY}"},
    {"Cookie": f"{COOKIE}=0123abcd"},
    {"Cookie": f"other={KEY}"},
    {"Authorization": f"Bearer {KEY}"},
]


@pytest.mark.parametrize("headers", WRONG, ids=[str(i) for i in range(len(WRONG))])
def test_a_wrong_key_or_cookie_is_refused_everywhere(stack: Stack, http: requests.Session, headers: dict) -> None:
    for base in (stack.door, stack.official):
        for path in GUARDED:
            for method in ("GET", "POST", "DELETE"):
                answer = http.request(method, base + path, headers=headers, allow_redirects=False)
                assert answer.status_code == 401, (base, method, path, headers)
                assert answer.json()["status"] == 401


def test_a_non_ascii_key_header_is_a_401_not_a_crash(stack: Stack) -> None:
    request = b"GET /metadata/ping HTTP/1.1\r\nHost: x\r\nx-api-key: \xc3\xa9\xff\xfe\r\nConnection: close\r\n\r\n"
    assert status_of(raw_exchange(stack.door, request)) == 401


def test_healthz_is_open(stack: Stack, http: requests.Session) -> None:
    for base in (stack.door, stack.official, stack.dead, stack.open):
        answer = http.get(f"{base}/healthz")
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        assert http.head(f"{base}/healthz").status_code == 200
    assert http.post(f"{stack.door}/healthz").status_code == 405


@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_accepted_with_the_key(stack: Stack, http: requests.Session, method: str) -> None:
    in_process = http.request(method, f"{stack.door}/metadata/echo", headers=with_key(), data=b"{}")
    assert in_process.status_code == 200
    through_api = http.request(method, f"{stack.door}/api/echo/x?y=1", headers=with_key(), data=b"body")
    assert through_api.status_code == 200
    official = http.request(method, f"{stack.official}/metadata/flows/F", headers=with_key(), data=b"body")
    assert official.status_code == 200
    if method != "HEAD":
        assert in_process.json()["method"] == method
        assert upstream_saw(through_api)["raw_path"] == "/api/echo/x?y=1"
        assert upstream_saw(official)["raw_path"] == "/metadata/flows/F"
        assert upstream_saw(official)["method"] == method


def test_the_in_process_service_gets_requests_and_bodies(stack: Stack, http: requests.Session) -> None:
    ping = http.get(f"{stack.door}/metadata/ping", headers=with_key())
    assert ping.status_code == 200 and ping.text == "pong"
    assert ping.headers["METADATA_SERVICE_VERSION"] == "2.5.1"
    created = http.post(f"{stack.door}/metadata/flows/HelloFlow", headers=with_key(), json={"user_name": "me"})
    assert created.json() == {"method": "POST", "body": '{"user_name": "me"}'}
    missing = http.get(f"{stack.door}/metadata/nowhere", headers=with_key())
    assert missing.status_code == 404 and "no such path" in missing.json()["message"]
    wrong_method = http.delete(f"{stack.door}/metadata/ping", headers=with_key())
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["Allow"]


def test_a_door_without_a_key_lets_everything_in(stack: Stack, http: requests.Session) -> None:
    assert http.get(f"{stack.open}/metadata/ping").text == "pong"
    assert http.get(f"{stack.open}/").json()["metadata"] == "/metadata"
    answer = http.get(f"{stack.open}/login?next=/x", allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"] == "/x"
    assert http.get(f"{stack.open}/nowhere").status_code == 404


# ---------------------------------------------------------------- login and cookie


def test_login_sets_a_hardened_cookie_that_opens_every_route(stack: Stack, http: requests.Session) -> None:
    form = http.get(f"{stack.door}/login?next=/flows/A")
    assert form.status_code == 200 and 'name="key"' in form.text and 'value="/flows/A"' in form.text
    answer = http.post(
        f"{stack.door}/login", data={"key": KEY, "next": "/flows/A?x=1"}, allow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/flows/A?x=1"
    set_cookie = answer.headers["Set-Cookie"]
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert "secure" not in attributes
    assert KEY not in set_cookie
    value = http.cookies[COOKIE]
    assert value and value != KEY

    assert http.get(f"{stack.door}/").status_code == 200
    assert http.get(f"{stack.door}/metadata/ping").status_code == 200
    echoed = upstream_saw(http.post(f"{stack.door}/api/echo", data=b"x"))
    assert echoed["method"] == "POST"
    assert http.get(f"{stack.door}/login?next=/flows", allow_redirects=False).headers["Location"] == "/flows"

    out = http.get(f"{stack.door}/logout", allow_redirects=False)
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    assert COOKIE not in http.cookies
    assert http.get(f"{stack.door}/metadata/ping").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{"X-Forwarded-Proto": "https"}, {"X-Forwarded-Proto": "https, http"}, {"Cf-Visitor": '{"scheme":"https"}'}],
)
def test_the_cookie_is_secure_behind_https(stack: Stack, http: requests.Session, headers: dict) -> None:
    answer = login(http, stack.door, **headers)
    assert answer.status_code == 303
    assert "secure" in [part.strip().lower() for part in answer.headers["Set-Cookie"].split(";")]
    out = http.post(f"{stack.door}/logout", headers=headers, allow_redirects=False)
    assert "secure" in out.headers["Set-Cookie"].lower()


def test_login_never_redirects_off_site(stack: Stack, http: requests.Session) -> None:
    for target in ["//evil.example", "https://evil.example/", "/\\evil.example", "evil", "/\tx", "", "javascript:x"]:
        answer = http.post(f"{stack.door}/login", data={"key": KEY, "next": target}, allow_redirects=False)
        assert answer.status_code == 303 and answer.headers["Location"] == "/", target


def test_login_refuses_a_wrong_key(stack: Stack, http: requests.Session) -> None:
    as_api = http.post(f"{stack.door}/login", data={"key": "wrong"}, allow_redirects=False)
    assert as_api.status_code == 401 and as_api.json()["message"] == "wrong access key"
    as_page = http.post(f"{stack.door}/login", data={"key": "wrong"}, headers={"Accept": "text/html"})
    assert as_page.status_code == 401 and "not right" in as_page.text
    assert "Set-Cookie" not in as_page.headers and COOKIE not in http.cookies


def test_login_takes_json_and_rejects_garbage_with_400(stack: Stack, http: requests.Session) -> None:
    good = http.post(f"{stack.door}/login", json={"key": KEY, "next": "/runs"}, allow_redirects=False)
    assert good.status_code == 303 and good.headers["Location"] == "/runs" and COOKIE in http.cookies
    for body in [b"{not json", b"[1, 2]", b'{"key": 5}', b"\xff\xfe"]:
        answer = http.post(f"{stack.door}/login", data=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and answer.json()["message"], body
    garbled = http.post(f"{stack.door}/login", data=b"\x00\xff garbage", headers={"Content-Type": "text/plain"})
    assert garbled.status_code == 400
    missing = http.post(f"{stack.door}/login", data=b"next=/", headers={"Content-Type": "text/plain"})
    assert missing.status_code == 401


def test_a_browser_without_the_key_is_sent_to_the_login_page_and_back(stack: Stack, http: requests.Session) -> None:
    page = {"Accept": "text/html,*/*"}
    answer = http.get(f"{stack.door}/flows/A/runs/1?tab=dag", headers=page, allow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/login?next=/flows/A/runs/1%3Ftab%3Ddag"
    form = http.get(stack.door + answer.headers["Location"], headers=page)
    assert form.status_code == 200 and 'value="/flows/A/runs/1?tab=dag"' in form.text
    signed_in = http.post(f"{stack.door}/login", data={"key": KEY, "next": "/flows/A/runs/1?tab=dag"},
                          headers=page, allow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/flows/A/runs/1?tab=dag"
    off_site = requests.get(f"{stack.door}//evil.example/x", headers=page, allow_redirects=False)
    assert off_site.headers["Location"] == "/login?next=/"
    as_api = requests.get(f"{stack.door}/flows/A", headers={"Accept": "application/json"})
    assert as_api.status_code == 401 and as_api.json()["message"]


# ---------------------------------------------------------------- proxying


def test_forwarded_requests_lose_the_key_and_the_session_cookie(stack: Stack, http: requests.Session) -> None:
    login(http, stack.door)
    http.cookies.set("theme", "dark")
    answer = http.get(
        f"{stack.door}/api/echo/a%2Fb?q=%20x",
        headers={
            "x-api-key": KEY,
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "1",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Custom": "kept",
        },
    )
    seen = upstream_saw(answer)
    headers = seen["headers"]
    assert seen["raw_path"] == "/api/echo/a%2Fb?q=%20x"
    assert "x-api-key" not in headers and KEY not in json.dumps(headers)
    assert COOKIE not in headers.get("cookie", "") and headers["cookie"] == "theme=dark"
    assert "x-private-hop" not in headers
    assert headers["x-custom"] == "kept"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == stack.door.removeprefix("http://")


def test_forwarded_headers_are_set_for_a_direct_request(stack: Stack, http: requests.Session) -> None:
    headers = upstream_saw(http.get(f"{stack.door}/api/echo", headers=with_key()))["headers"]
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "cookie" not in headers and "accept-encoding" in headers  # requests sends one; the door adds none


def test_upstream_answers_pass_unchanged(stack: Stack, http: requests.Session) -> None:
    teapot = http.get(f"{stack.door}/api/status/418", headers=with_key())
    assert teapot.status_code == 418 and teapot.text == "teapot"
    assert teapot.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    created = http.get(f"{stack.door}/api/status/201", headers=with_key())
    assert created.status_code == 201
    for empty in (204, 304):
        answer = http.get(f"{stack.door}/api/status/{empty}", headers=with_key())
        assert answer.status_code == empty and answer.content == b""
    assert http.get(f"{stack.door}/api/echo", headers=with_key()).status_code == 200  # connection still sound
    raw = http.get(f"{stack.door}/api/gzip", headers=with_key(), stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert raw.raw.read(decode_content=False) == b"\x1f\x8b not really gzip"


def test_a_large_upload_streams_through(stack: Stack, http: requests.Session) -> None:
    expected = hashlib.sha256()
    stack.probe.client_sent = 0
    stack.probe.client_sent_at_first_upstream_byte = None

    def body() -> Iterator[bytes]:
        while stack.probe.client_sent < LARGE:
            piece = BLOCK[: LARGE - stack.probe.client_sent]
            expected.update(piece)
            stack.probe.client_sent += len(piece)
            yield piece

    answer = http.post(f"{stack.door}/api/upload", data=body(), headers=with_key())
    assert answer.status_code == 200
    assert answer.json() == {"body_len": LARGE, "body_sha256": expected.hexdigest()}
    # The upstream had bytes while the client was still far from done: the door did not buffer the body.
    first = stack.probe.client_sent_at_first_upstream_byte
    assert first is not None and first < LARGE // 2


@pytest.mark.parametrize("known_length", [False, True])
def test_a_large_download_streams_through(stack: Stack, http: requests.Session, known_length: bool) -> None:
    query = f"size={LARGE}" + ("&length=1" if known_length else "")
    with http.get(f"{stack.door}/api/download?{query}", headers=with_key(), stream=True) as answer:
        assert answer.status_code == 200
        if known_length:
            assert answer.headers["Content-Length"] == str(LARGE)
        else:
            assert answer.headers["Transfer-Encoding"] == "chunked"
        digest = hashlib.sha256()
        pieces = answer.iter_content(chunk_size=1024 * 1024)
        head = next(pieces)
        # The client holds its first piece and reads no more: the upstream cannot have produced
        # everything unless the door buffered it, because every buffer in between is bounded.
        assert head and stack.probe.produced < LARGE
        digest.update(head)
        received = len(head)
        for chunk in pieces:
            digest.update(chunk)
            received += len(chunk)
    assert received == LARGE
    assert digest.hexdigest() == hashlib.sha256(BLOCK * (LARGE // len(BLOCK))).hexdigest()


def test_a_client_that_leaves_midway_does_not_hurt_the_door(
    stack: Stack, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        answer = http.get(f"{stack.door}/api/download?size={LARGE}", headers=with_key(), stream=True)
        assert next(answer.iter_content(chunk_size=65536))
        answer.close()
    wait_until(lambda: sum("GET /api/download" in r.getMessage() for r in caplog.records) >= 6, "access lines")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert http.get(f"{stack.door}/api/echo", headers=with_key()).status_code == 200


def test_an_upstream_that_breaks_off_midway_cuts_the_client_off(stack: Stack, http: requests.Session) -> None:
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(f"{stack.door}/api/break", headers=with_key()).content


def test_an_upstream_that_is_down_gives_502(stack: Stack, http: requests.Session) -> None:
    for path in ["/metadata/ping", "/api/echo", "/api/flows?_limit=5"]:
        answer = http.post(f"{stack.dead}{path}", headers=with_key(), data=b"x" * 100_000)
        assert answer.status_code == 502
        message = answer.json()["message"]
        assert "not answering" in message and ("metadata service" in message or "UI backend" in message)
    assert http.get(f"{stack.dead}/api/echo").status_code == 401


def test_upstream_urls_are_checked() -> None:
    for bad in ["ftp://127.0.0.1:1", "127.0.0.1:8083", "http://127.0.0.1:8083/api", "http://:80"]:
        with pytest.raises(ConfigError):
            Upstream(bad)
    assert Upstream("http://127.0.0.1:8083/").url == "http://127.0.0.1:8083"


# ---------------------------------------------------------------- WebSockets


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


async def ws_session(base: str, path: str = "/api/ws", **kwargs: Any) -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(base.replace("http://", "ws://") + path, **kwargs)
    except BaseException:
        await session.close()
        raise
    return session, ws


def test_websocket_relays_text_binary_and_the_upstream_close(stack: Stack) -> None:
    async def scenario() -> tuple[Any, ...]:
        session, ws = await ws_session(stack.door, headers=with_key(), protocols=("chat",))
        async with session:
            await ws.send_str("hello")
            text = await ws.receive_str()
            await ws.send_bytes(b"\x00\x01\x02" * 10_000)
            binary = await ws.receive_bytes()
            await ws.send_str("close:4001")
            closing = await ws.receive()
            return ws.protocol, text, binary, closing.type, ws.close_code

    protocol, text, binary, closing, code = run(scenario())
    assert protocol == "chat"
    assert text == "echo:hello"
    assert binary == (b"\x00\x01\x02" * 10_000)[::-1]
    assert closing is aiohttp.WSMsgType.CLOSE and code == 4001


def test_websocket_close_from_the_client_reaches_the_upstream(stack: Stack) -> None:
    probe = stack.probe
    wait_until(lambda: len(probe.ws_close_codes) == probe.ws_opened, "earlier WebSockets to close")
    probe.ws_closed.clear()
    probe.ws_close_codes.clear()
    probe.ws_opened = 0

    async def scenario() -> str:
        session, ws = await ws_session(stack.door, headers=with_key())
        async with session:
            await ws.send_str("one")
            answer = await ws.receive_str()
            await ws.close(code=4002)
            return str(answer)

    assert run(scenario()) == "echo:one"
    assert stack.probe.ws_closed.wait(timeout=10)
    assert stack.probe.ws_close_codes == [4002]


def test_websocket_opens_with_the_login_cookie(stack: Stack, http: requests.Session) -> None:
    login(http, stack.door)
    cookie = f"{COOKIE}={http.cookies[COOKIE]}"

    async def scenario() -> str:
        session, ws = await ws_session(stack.door, headers={"Cookie": cookie})
        async with session:
            await ws.send_str("via cookie")
            reply = await ws.receive_str()
            await ws.close()
            return str(reply)

    assert run(scenario()) == "echo:via cookie"


def test_a_websocket_client_that_vanishes_closes_the_upstream(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    probe = stack.probe
    wait_until(lambda: len(probe.ws_close_codes) == probe.ws_opened, "earlier WebSockets to close")
    probe.ws_closed.clear()
    probe.ws_close_codes.clear()
    probe.ws_opened = 0
    host, port = stack.door.removeprefix("http://").split(":")
    handshake = (
        f"GET /api/ws HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(handshake)
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    # No close frame was sent: the door reports the loss to the upstream as 1011.
    assert stack.probe.ws_closed.wait(timeout=10)
    assert stack.probe.ws_close_codes == [1011]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"Cookie": f"{COOKIE}={KEY}"}])
def test_websocket_without_the_key_is_refused(stack: Stack, headers: dict) -> None:
    opened = stack.probe.ws_opened
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        run(ws_session(stack.door, headers=headers))
    assert refused.value.status == 401
    assert stack.probe.ws_opened == opened


def test_websocket_to_a_missing_or_dead_upstream(stack: Stack) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as dead:
        run(ws_session(stack.dead, headers=with_key()))
    assert dead.value.status == 502
    with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
        run(ws_session(stack.door, path="/api/nows", headers=with_key()))
    assert missing.value.status == 404


def test_a_broken_websocket_handshake_is_a_400(stack: Stack) -> None:
    request = (
        f"GET /api/ws HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n\r\n"
    ).encode()
    answer = raw_exchange(stack.door, request)
    assert status_of(answer) == 400 and b"WebSocket handshake" in answer


# ---------------------------------------------------------------- static UI


def test_index_gets_the_relative_service_url(stack: Stack, http: requests.Session) -> None:
    for path in ["/", "/index.html", "/flows/HelloFlow/runs/3", "/runs?status=running", "/a/b/c.d"]:
        answer = http.get(stack.door + path, headers=with_key())
        assert answer.status_code == 200, path
        assert answer.headers["Content-Type"].startswith("text/html")
        assert '<script>window.METAFLOW_SERVICE="/api";</script></head>' in answer.text
        assert answer.text.count("METAFLOW_SERVICE") == 1


def test_bundle_files_are_served_as_they_are(stack: Stack, http: requests.Session) -> None:
    script = http.get(f"{stack.door}/static/js/main.js", headers=with_key())
    assert script.status_code == 200 and script.text == "console.log('ui');"
    assert http.get(f"{stack.door}/favicon.ico", headers=with_key()).content == b"\x00\x01icon"
    assert http.head(f"{stack.door}/static/js/main.js", headers=with_key()).status_code == 200
    missing = http.get(f"{stack.door}/static/js/nope.js", headers=with_key())
    assert missing.status_code == 404 and missing.json()["message"]


def test_paths_outside_the_bundle_are_not_served(stack: Stack) -> None:
    for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/static/..%2f..%2fsecret.txt", "//etc/passwd"]:
        answer = raw_exchange(stack.door, f"GET {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\n\r\n".encode())
        assert status_of(answer) in (200, 400, 404), path
        assert b"outside the bundle" not in answer and b"root:" not in answer, path


def test_inject_service_url_places_the_script_before_head() -> None:
    assert inject_service_url("<HTML><HEAD></HEAD></HTML>", "/api") == (
        '<HTML><HEAD><script>window.METAFLOW_SERVICE="/api";</script></HEAD></HTML>'
    )
    assert inject_service_url("<p>no head</p>", "/api").startswith("<script>window.METAFLOW_SERVICE=")


def test_the_native_uis_index_asks_for_a_running_tasks_log_every_two_seconds(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html><head><title>UI</title></head><body></body></html>")
    index = StaticUI(tmp_path, live_logs=True).index.decode()
    assert index.index('window.METAFLOW_SERVICE="/api"') < index.index(LOG_POLL_SCRIPT) < index.index("</head>")
    assert LOG_POLL_SCRIPT not in StaticUI(tmp_path).index.decode()  # the official UI backend's page
    assert "args[1]===20000){args[1]=2000;}" in LOG_POLL_SCRIPT


def test_a_bundle_without_index_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_app(KEY, None, static_dir=tmp_path)


# ---------------------------------------------------------------- malformed requests


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_malformed_requests_get_a_4xx(stack: Stack, request_bytes: bytes) -> None:
    answer = raw_exchange(stack.door, request_bytes)
    assert 400 <= status_of(answer) < 500


def test_odd_paths_with_the_key_never_give_5xx(stack: Stack, http: requests.Session) -> None:
    odd = ["/metadata/%00", "/api/echo/%ff%fe", "/%00", "/static/%00", "/login?next=%00", "/metadata/" + "a" * 5000]
    for path in odd:
        answer = http.get(stack.door + path, headers=with_key(), allow_redirects=False)
        assert answer.status_code < 500, path


# ---------------------------------------------------------------- logs


def test_the_key_and_the_cookie_never_reach_a_log_line(
    stack: Stack, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cookie_value = None
    with caplog.at_level(logging.DEBUG):
        for base in (stack.door, stack.official, stack.dead):
            http.get(f"{base}/metadata/ping", headers=with_key())
            http.get(f"{base}/metadata/ping", headers={"x-api-key": KEY + "-wrong"})
            http.post(f"{base}/login", data={"key": KEY + "-wrong"})
            http.post(f"{base}/login", data=f"key={KEY}".encode(), headers={"Content-Type": "application/json"})
            answer = login(http, base)
            cookie_value = answer.cookies.get(COOKIE) or cookie_value
            http.post(f"{base}/api/echo", headers=with_key(), data=KEY.encode())
            http.get(f"{base}/")
            http.get(f"{base}/logout")
        for malformed in [
            f"GET /%zz HTTP/1.1\r\nx-api-key: {KEY}\r\n\r\n",
            f"GET / HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\x01\r\n\r\n",
            f"GET / HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}" + "a" * 9000 + "\r\n\r\n",
            f"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz{KEY}\r\n",
            f"GET / HTTP/1.1\r\nHost: x\r\nCookie: {COOKIE}={cookie_value}\r\nBad Header\r\n\r\n",
        ]:
            assert status_of(raw_exchange(stack.door, malformed.encode())) == 400
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            http.get(f"{stack.door}/api/break", headers=with_key()).content
        # The last request's access line and warning come after its response; wait for both.
        wait_until(lambda: any("GET /api/break" in r.getMessage() for r in caplog.records), "the last access line")
        wait_until(lambda: any("broke off" in r.getMessage() for r in caplog.records), "the break-off warning")
    assert sum(r.name == "aiohttp.access" and "/login" in r.getMessage() for r in caplog.records) >= 9
    assert cookie_value
    assert any("failed sign-in" in r.getMessage() for r in caplog.records)
    assert any("not answering" in r.getMessage() for r in caplog.records)
    assert any("Error handling request" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        line = record.getMessage() + repr(record.args) + (record.exc_text or "")
        assert KEY not in line, line
        assert cookie_value not in line, line
    assert KEY not in caplog.text and cookie_value not in caplog.text


# ---------------------------------------------------------------- sessions (issue 8 M3)


def door_with_files(stack: Stack, folder: Path, key: str = KEY) -> tuple[str, Path, Path]:
    """A door whose key lives in a file and whose sessions are kept in a file, as `web.py` builds it."""
    key_file, sessions_file = folder / "access_key", folder / "sessions.json"
    if not key_file.exists():
        key_file.write_text(key + "\n")
    door = stack.servers.serve(
        create_app(key_file.read_text().strip(), metadata_subapp(), key_file=key_file, sessions_file=sessions_file)
    )
    return door, key_file, sessions_file


def cookie_after_login(base: str, key: str = KEY) -> str:
    answer = requests.post(f"{base}/login", data={"key": key}, allow_redirects=False)
    assert answer.status_code == 303
    return answer.cookies[COOKIE]


def opens(base: str, cookie: str) -> bool:
    return requests.get(f"{base}/metadata/ping", cookies={COOKIE: cookie}).status_code == 200


def test_each_login_gets_its_own_random_session_and_logout_ends_it(stack: Stack, tmp_path: Path) -> None:
    door, _, sessions_file = door_with_files(stack, tmp_path)
    first, second = cookie_after_login(door), cookie_after_login(door)
    assert first != second and KEY not in first
    assert opens(door, first) and opens(door, second)
    out = requests.get(f"{door}/logout", cookies={COOKIE: first}, allow_redirects=False)
    assert out.status_code == 303
    assert not opens(door, first), "a cookie kept after /logout must not open the door"
    assert opens(door, second)
    stored = sessions_file.read_text()
    assert first not in stored and second not in stored
    assert sessions_file.stat().st_mode & 0o777 == 0o600


def test_sessions_outlive_the_web_process_and_a_new_key_ends_them(stack: Stack, tmp_path: Path) -> None:
    door, key_file, _ = door_with_files(stack, tmp_path)
    cookie = cookie_after_login(door)
    restarted, _, _ = door_with_files(stack, tmp_path)
    assert opens(restarted, cookie)
    key_file.write_text("a-brand-new-key-0123456789\n")
    wait_until(lambda: not opens(restarted, cookie), "the running door to drop sessions of the old key")
    assert requests.get(f"{restarted}/metadata/ping", headers={"x-api-key": KEY}).status_code == 401
    assert requests.get(f"{restarted}/metadata/ping", headers={"x-api-key": "a-brand-new-key-0123456789"}).ok
    assert opens(restarted, cookie_after_login(restarted, "a-brand-new-key-0123456789"))


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "sessions": [1]}', b"\xff" * 10,
                                     b'{"format": 1, "sessions": {"zz": [1, 2], "' + b"a" * 64 + b'": ["x", 1]}}'])
def test_a_hostile_sessions_file_opens_nothing_and_breaks_nothing(stack: Stack, tmp_path: Path, content: bytes) -> None:
    door, _, sessions_file = door_with_files(stack, tmp_path)
    sessions_file.write_bytes(content)
    assert not opens(door, "a" * 43)
    assert opens(door, cookie_after_login(door))


def test_sessions_expire_when_idle_and_in_all(tmp_path: Path) -> None:
    from mfcolab.web import sessions

    now = [1_000_000.0]
    store = sessions.SessionStore(tmp_path / "sessions.json", clock=lambda: now[0])
    idle, busy = store.open(KEY), store.open(KEY)
    for _ in range(5):
        now[0] += sessions.IDLE / 2
        assert store.valid(KEY, busy)
    assert not store.valid(KEY, idle)
    now[0] += sessions.TOTAL
    assert not store.valid(KEY, busy)
    assert not sessions.SessionStore(tmp_path / "sessions.json", clock=lambda: now[0]).valid(KEY, busy)


# ---------------------------------------------------------------- what a request without the key costs (M1, M2, L1, L2)


def test_login_bodies_are_small_and_never_decompressed(stack: Stack) -> None:
    import gzip

    big = requests.post(f"{stack.door}/login", data={"key": "x" * 10_000})
    assert big.status_code == 413
    zipped = requests.post(f"{stack.door}/login", data=gzip.compress(b"key=" + b"0" * 60_000),
                           headers={"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"})
    assert zipped.status_code == 400 and "compressed" in zipped.json()["message"]
    surrogate = requests.post(f"{stack.door}/login", data=b'{"key":"\\ud800"}',
                              headers={"Content-Type": "application/json"})
    assert surrogate.status_code == 401


def test_a_body_labelled_gzip_that_is_not_is_a_400_with_or_without_the_key(stack: Stack) -> None:
    for headers in ({}, {"x-api-key": KEY}):
        answer = requests.post(f"{stack.door}/metadata/flows/A", data=b"not gzip at all",
                               headers={"Content-Encoding": "gzip", **headers})
        assert answer.status_code == 400 and "compressed" in answer.json()["message"], headers


def test_requests_without_the_key_in_flight_are_bounded(stack: Stack) -> None:
    from mfcolab.web.guard import MAX_UNAUTHENTICATED

    host, port = stack.door.removeprefix("http://").split(":")
    signed_in = requests.Session()
    assert login(signed_in, stack.door).status_code == 303
    held = []
    try:
        for _ in range(MAX_UNAUTHENTICATED):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 100\r\n\r\nkey=")
            held.append(sock)
        wait_until(lambda: requests.post(f"{stack.door}/login", data={"key": "k"}).status_code == 503,
                   "the door to refuse one more keyless request")
        assert requests.get(f"{stack.door}/metadata/ping", headers={"x-api-key": KEY}).status_code == 200
        assert signed_in.get(f"{stack.door}/metadata/ping").status_code == 200, "a session is not counted"
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: requests.post(f"{stack.door}/login", data={"key": "k"}).status_code == 401,
               "the door to take keyless requests again")


def test_a_connection_that_never_finishes_its_headers_is_closed(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from mfcolab.web import guard

    monkeypatch.setitem(guard.SERVER_SETTINGS, "keepalive_timeout", 0.5)
    door = stack.servers.serve(create_app(KEY, metadata_subapp()))
    host, port = door.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /metadata/ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert sock.recv(100) == b""  # closed by the door, not by the 10 s socket timeout


# ---------------------------------------------------------------- cross-site requests and framing (L3, L4, L13)


def test_cross_site_state_changes_are_refused(stack: Stack, http: requests.Session) -> None:
    login(http, stack.door)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "https://evil.example"}, {"Origin": "null"}):
        answer = http.post(f"{stack.door}/metadata/echo", data=b"{}", headers=headers)
        assert answer.status_code == 403, headers
        assert requests.post(f"{stack.door}/login", data={"key": KEY}, headers=headers).status_code == 403
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Origin": stack.door}, {}):
        assert http.post(f"{stack.door}/metadata/echo", data=b"{}", headers=headers).status_code == 200, headers
    assert http.get(f"{stack.door}/metadata/ping", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_a_keyless_door_answers_only_to_its_own_host_and_origin(stack: Stack) -> None:
    port = stack.open.rsplit(":", 1)[1]
    rebound = requests.get(f"{stack.open}/metadata/ping", headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 421
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert requests.get(f"{stack.open}/metadata/ping", headers={"Host": host}).status_code == 200
    page_post = requests.post(f"{stack.open}/metadata/echo", data=b"x", headers={
        "Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert page_post.status_code == 403


def test_no_other_origin_can_frame_the_door(stack: Stack, http: requests.Session) -> None:
    answers = [http.get(f"{stack.door}/login"), http.get(f"{stack.door}/metadata/ping"), http.get(f"{stack.door}/")]
    login(http, stack.door)
    answers += [http.get(f"{stack.door}/"), http.get(f"{stack.door}/api/echo"), http.get(f"{stack.door}/static/js/main.js")]
    for answer in answers:
        assert answer.headers["X-Frame-Options"] == "SAMEORIGIN", answer.url
        assert "frame-ancestors 'self'" in answer.headers["Content-Security-Policy"], answer.url


def test_only_the_door_itself_can_frame_its_pages(stack: Stack) -> None:
    """The UI shows a card in a frame of its own origin; a page of any other origin (here another
    port on 127.0.0.1) gets nothing in its frame, even from a browser signed in to the door."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup --test installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_context().new_page()
            assert page.request.post(f"{stack.door}/login", form={"key": KEY}, max_redirects=0).status == 303
            assert framed_ui_page(page, stack.door, stack.door) is True
            assert framed_ui_page(page, stack.open, stack.door) is False
        finally:
            browser.close()


def framed_ui_page(page: Any, page_origin: str, framed: str) -> bool:
    """Open a page of `page_origin`, frame the door's UI page in it, and say whether the page shows."""
    page.goto(f"{page_origin}/metadata/ping")
    page.evaluate("""src => new Promise(done => {
        const frame = document.createElement('iframe');
        frame.onload = () => done(true);
        frame.src = src;
        document.body.appendChild(frame);
    })""", f"{framed}/")
    child = page.frames[1]
    return bool(child.url.startswith(framed) and child.locator("#root").count() == 1)
