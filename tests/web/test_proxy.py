"""The reverse proxy (mfcolab.web.proxy) behind a real front door: what the upstream sees and what
comes back, streamed bodies both ways, an upstream that breaks off or is down, and WebSockets
relayed frame by frame to a real WebSocket echo server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

import aiohttp
import pytest
import requests

from frontdoor_helpers import (
    BLOCK,
    KEY,
    LARGE,
    Stack,
    login,
    raw_exchange,
    status_of,
    upstream_saw,
    with_key,
)
from helpers import wait_until
from mfcolab.errors import ConfigError
from mfcolab.web.auth import COOKIE
from mfcolab.web.proxy import Upstream


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
    wait_until(lambda: sum("GET /api/download" in r.getMessage() for r in caplog.records) >= 6, what="access lines")
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
    wait_until(lambda: len(probe.ws_close_codes) == probe.ws_opened, what="earlier WebSockets to close")
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
    wait_until(lambda: len(probe.ws_close_codes) == probe.ws_opened, what="earlier WebSockets to close")
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
