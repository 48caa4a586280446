"""The front door's test harness: real aiohttp servers on 127.0.0.1 in a thread, real stand-ins for
the upstream services (an HTTP echo/stream server and a WebSocket echo server, the UI backend and
the official metadata service), a real in-process sub-app for /metadata, and one stack of doors
built from them (with the key, official, dead upstreams, keyless). tests/web/conftest.py serves it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

from mfcolab.web.frontdoor import create_app, make_runner
from mfcolab.web.proxy import Upstream

KEY = "k3y-Secret_9f8e7d6c5b4a"


CHROMIUM = Path("/usr/bin/chromium")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


LARGE = 50 * 1024 * 1024


BLOCK = hashlib.sha256(b"mfcolab").digest() * 2048  # 64 KiB of fixed bytes


INDEX_HTML = "<!doctype html><html><head><title>Metaflow</title></head><body><div id=root></div></body></html>"


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


def with_key(**headers: str) -> dict[str, str]:
    return {"x-api-key": KEY, **headers}


def login(http: requests.Session, base: str, **headers: str) -> requests.Response:
    return http.post(f"{base}/login", data={"key": KEY, "next": "/"}, headers=headers, allow_redirects=False)


def upstream_saw(answer: requests.Response) -> dict[str, Any]:
    seen = answer.json()
    seen["headers"] = {k.lower(): v for k, v in seen["headers"]}
    return seen


def non_loopback_address() -> str:
    """This machine's address on its default route (a UDP connect sends nothing)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        address = str(probe.getsockname()[0])
    except OSError:
        address = ""
    finally:
        probe.close()
    if not address or address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


@contextlib.contextmanager
def door_on(host: str, app: web.Application | None = None) -> Iterator[str]:
    """A door (by default with the key and the in-process stand-in) listening on `host`."""
    servers = ServerThread()

    async def start() -> str:
        runner = make_runner(app if app is not None else create_app(KEY, metadata_subapp()))
        await runner.setup()
        await web.TCPSite(runner, host, 0).start()
        servers.runners.append(runner)
        return f"http://{host}:{runner.addresses[0][1]}"

    try:
        yield str(servers.call(start()))
    finally:
        servers.close()
