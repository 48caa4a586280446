"""What a request meets before the key (mfcolab.web.guard): compressed bodies, the bound on
requests without the key, slow headers, cross-site requests, a keyless door's Host, framing."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests

from frontdoor_helpers import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    KEY,
    Stack,
    login,
    metadata_subapp,
)
from helpers import wait_until
from mfcolab.web.frontdoor import create_app


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
                   what="the door to refuse one more keyless request")
        assert requests.get(f"{stack.door}/metadata/ping", headers={"x-api-key": KEY}).status_code == 200
        assert signed_in.get(f"{stack.door}/metadata/ping").status_code == 200, "a session is not counted"
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: requests.post(f"{stack.door}/login", data={"key": "k"}).status_code == 401,
               what="the door to take keyless requests again")


def test_a_connection_that_never_finishes_its_headers_is_closed(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from mfcolab.web import guard

    monkeypatch.setitem(guard.SERVER_SETTINGS, "keepalive_timeout", 0.5)
    door = stack.servers.serve(create_app(KEY, metadata_subapp()))
    host, port = door.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /metadata/ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert sock.recv(100) == b""  # closed by the door, not by the 10 s socket timeout


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
