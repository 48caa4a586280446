"""The front door's assembly (mfcolab.web.frontdoor) against real servers on 127.0.0.1: the open
/healthz, the in-process service, malformed requests, and logs that never carry the key or a cookie."""

from __future__ import annotations

import logging

import pytest
import requests

from frontdoor_helpers import (
    KEY,
    Stack,
    login,
    raw_exchange,
    status_of,
    with_key,
)
from helpers import wait_until
from mfcolab.web.auth import COOKIE


def test_healthz_is_open(stack: Stack, http: requests.Session) -> None:
    for base in (stack.door, stack.official, stack.dead, stack.open):
        answer = http.get(f"{base}/healthz")
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        assert http.head(f"{base}/healthz").status_code == 200
    assert http.post(f"{stack.door}/healthz").status_code == 405


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
        wait_until(lambda: any("GET /api/break" in r.getMessage() for r in caplog.records), what="the last access line")
        wait_until(lambda: any("broke off" in r.getMessage() for r in caplog.records), what="the break-off warning")
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
