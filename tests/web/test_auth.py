"""The access key (mfcolab.web.auth) at a real front door: every route refused without it, the
browser login and its cookie, the login body's limits, and the forwarded host believed only from
a proxy on this machine."""

from __future__ import annotations

import pytest
import requests

from frontdoor_helpers import (
    KEY,
    Stack,
    door_on,
    login,
    non_loopback_address,
    raw_exchange,
    status_of,
    upstream_saw,
    with_key,
)
from mfcolab.web.auth import COOKIE
from mfcolab.web.frontdoor import create_app
from mfcolab.web.proxy import Upstream

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


def test_a_door_without_a_key_lets_everything_in(stack: Stack, http: requests.Session) -> None:
    assert http.get(f"{stack.open}/metadata/ping").text == "pong"
    assert http.get(f"{stack.open}/").json()["metadata"] == "/metadata"
    answer = http.get(f"{stack.open}/login?next=/x", allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"] == "/x"
    assert http.get(f"{stack.open}/nowhere").status_code == 404


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


def test_forwarded_host_is_believed_only_from_this_machine(stack: Stack) -> None:
    """X-Forwarded-Host names the door only when a proxy on this machine sent the request
    (cloudflared, Colab's port proxy): a remote client's claim neither makes another site's
    Origin look like the door's own nor reaches an upstream."""
    claim = {"X-Forwarded-Host": "public.example", "Origin": "http://public.example"}
    address = non_loopback_address()
    with door_on(address, create_app(KEY, Upstream(stack.upstream, "metadata service"))) as remote_door:
        changed = requests.post(f"{remote_door}/metadata/echo", data=b"{}", headers=with_key(**claim), timeout=10)
        assert changed.status_code == 403  # a remote client's claim: the Origin is another site
        seen = upstream_saw(requests.get(f"{remote_door}/metadata/echo", headers=with_key(**claim), timeout=10))
        assert seen["headers"]["x-forwarded-host"] == remote_door.removeprefix("http://")
    with door_on("127.0.0.1", create_app(KEY, Upstream(stack.upstream, "metadata service"))) as local_door:
        changed = requests.post(f"{local_door}/metadata/echo", data=b"{}", headers=with_key(**claim), timeout=10)
        assert changed.status_code == 200  # the browser asked the tunnel for public.example
        seen = upstream_saw(requests.get(f"{local_door}/metadata/echo", headers=with_key(**claim), timeout=10))
        assert seen["headers"]["x-forwarded-host"] == "public.example"
