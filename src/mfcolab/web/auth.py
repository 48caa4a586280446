"""The access key: who may pass the front door, and the browser login that trades the key for a session.

A request is let in when it carries the key in the `x-api-key` header (what the Metaflow client
sends from METAFLOW_SERVICE_AUTH_KEY) or a live session cookie from POST /login. Sessions are
random ids kept server-side (sessions.py): /logout ends one, a new key ends them all. With a
key file, the key is read again when the file changes, so `mfcolab rotate-key` takes effect in
a running door. Every comparison is constant-time.

The guard in front of every route (guard.py) decides what an unauthenticated request may cost.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..sharedfile import read_regular
from .sessions import TOTAL as SESSION_LIFETIME
from .sessions import SessionStore

log = logging.getLogger(__name__)

HEADER = "x-api-key"
COOKIE = "mfcolab_session"
OPEN_PATHS = frozenset({"/healthz", "/login", "/logout"})
MAX_KEY_LENGTH = 4096
LOGIN_BODY_LIMIT = 4096  # a login form is well under 1 KiB
LOGIN_BODY_TIMEOUT = 10.0
KEY_CHECK_INTERVAL = 1.0


class AccessKey:
    """The key (from `key`, or from `key_file` re-read when it changes) and the browser sessions under it."""

    def __init__(self, key: str, *, key_file: Path | None = None, sessions: SessionStore | None = None) -> None:
        if not key:
            raise ValueError("the access key must not be empty")
        self._key = key
        self.key_file = key_file
        self.sessions = sessions if sessions is not None else SessionStore(None)
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = 0.0

    @property
    def key(self) -> str:
        if self.key_file is not None and time.monotonic() - self._checked_at >= KEY_CHECK_INTERVAL:
            self._checked_at = time.monotonic()
            self._reload(self.key_file)
        return self._key

    def _reload(self, key_file: Path) -> None:
        try:
            info = os.stat(key_file)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return
            text = read_regular(key_file, MAX_KEY_LENGTH).decode().strip() if info.st_size <= MAX_KEY_LENGTH else ""
        except (OSError, ValueError):
            return  # keep the key we have: a missing or garbled file must not open the door
        self._stamp = stamp
        if text and text != self._key:
            log.info("front door: the access key changed (%s)", key_file)
            self._key = text

    def matches(self, supplied: str) -> bool:
        """True when `supplied` is the key. Any string compares safely, lone surrogates included."""
        if len(supplied) > MAX_KEY_LENGTH:
            return False
        return hmac.compare_digest(_as_bytes(supplied), _as_bytes(self.key))

    def session_of(self, request: web.BaseRequest) -> str | None:
        """The live session id the request's cookie carries, if any."""
        if "Cookie" not in request.headers:
            return None
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        return cookie if self.sessions.valid(self.key, cookie) else None

    def admits(self, request: web.BaseRequest) -> bool:
        """True when the request carries the key in the header or a live session cookie."""
        supplied = request.headers.get(HEADER)
        if supplied is not None:
            return self.matches(supplied)
        return self.session_of(request) is not None


def _as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def from_known_proxy(request: web.BaseRequest) -> bool:
    """True when the request came from this machine: cloudflared and Colab's port proxy both
    connect over loopback. A remote client's forwarding headers are its own claims."""
    try:
        peer = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return peer.is_loopback


def original_scheme(request: web.BaseRequest) -> str:
    """The scheme the browser used: from X-Forwarded-Proto or cloudflared's Cf-Visitor when a
    known proxy sent the request, else the socket's."""
    if not from_known_proxy(request):
        return request.scheme
    forwarded = request.headers.get("X-Forwarded-Proto")
    if forwarded:
        return forwarded.split(",")[0].strip().lower()
    visitor = request.headers.get("Cf-Visitor")
    if visitor:
        try:
            scheme = json.loads(visitor).get("scheme")
        except (ValueError, AttributeError):
            scheme = None
        if scheme in ("http", "https"):
            return str(scheme)
    return request.scheme


def original_host(request: web.BaseRequest) -> str:
    """The host the browser asked for: the first X-Forwarded-Host when a known proxy sent the
    request, else the Host header. A remote client's X-Forwarded-Host is its own claim."""
    if from_known_proxy(request):
        forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.host


def request_is_https(request: web.BaseRequest) -> bool:
    return original_scheme(request) == "https"


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything that could leave this origin becomes "/"."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def wants_html(request: web.BaseRequest) -> bool:
    """True for a browser page load (not an API call or a WebSocket handshake)."""
    if request.method not in ("GET", "HEAD"):
        return False
    if request.headers.get("Upgrade"):
        return False
    return "text/html" in request.headers.get("Accept", "")


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def json_error(status: int, message: str, **headers: str) -> web.Response:
    body = json.dumps({"status": status, "message": message})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers or None)


def refusal(request: web.BaseRequest) -> web.StreamResponse:
    """The answer to a request without a valid key: a browser is sent to the login page
    (303, with the path it asked for as `next`), everyone else gets a 401 in JSON."""
    if wants_html(request):
        return see_other("/login?next=" + quote(safe_next(request.rel_url.raw_path_qs), safe="/"))
    supplied = HEADER in request.headers
    message = (
        "the access key in the x-api-key header is wrong"
        if supplied
        else "this mfcolab service needs the access key: send it in the x-api-key header "
        "(METAFLOW_SERVICE_AUTH_KEY) or sign in at /login"
    )
    return json_error(401, message, **{"WWW-Authenticate": 'ApiKey header="x-api-key"'})


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mfcolab: sign in</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 26rem; margin: 12vh auto; padding: 0 1rem; }}
input {{ width: 100%; padding: .5rem; margin: .5rem 0 1rem; box-sizing: border-box; }}
button {{ padding: .5rem 1.2rem; }}
p.note {{ color: #444; }}
</style>
</head>
<body>
<h1>mfcolab</h1>
<p class="note">{error}</p>
<form method="post" action="/login">
<label for="key">Access key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{next_path}">
<button type="submit">Sign in</button>
</form>
<p class="note"><code>mfcolab key</code> prints the key on the machine that runs mfcolab.</p>
</body>
</html>
"""


def login_page(next_path: str, error: str = "") -> str:
    return _PAGE.format(next_path=html.escape(safe_next(next_path), quote=True), error=html.escape(error))


class LoginInputError(ValueError):
    """The login body is not a small form or JSON object with a string 'key'."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _read_login_form(request: web.Request) -> tuple[str | None, str]:
    """The submitted key and next path, from a form or a JSON object of at most LOGIN_BODY_LIMIT
    bytes, read within LOGIN_BODY_TIMEOUT. Raises LoginInputError on anything else."""
    raw = await _read_small_body(request)
    if request.content_type == "application/json":
        try:
            data = json.loads(raw)
        except ValueError:
            raise LoginInputError("login body is not valid JSON") from None
        if not isinstance(data, dict):
            raise LoginInputError("login body must be a JSON object with a 'key' field")
        key, next_path = data.get("key"), data.get("next")
    elif request.content_type in ("application/x-www-form-urlencoded", "application/octet-stream", "text/plain"):
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=8))
        except (ValueError, UnicodeDecodeError):
            raise LoginInputError("login body is not a valid form") from None
        key, next_path = form.get("key"), form.get("next")
    else:
        raise LoginInputError("sign in with a form (application/x-www-form-urlencoded) or JSON", 415)
    if key is not None and not isinstance(key, str):
        raise LoginInputError("'key' must be a string")
    return key, next_path if isinstance(next_path, str) else "/"


async def _read_small_body(request: web.Request) -> bytes:
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise LoginInputError("the login body must not be compressed")
    if (request.content_length or 0) > LOGIN_BODY_LIMIT:
        raise LoginInputError(f"a login body is at most {LOGIN_BODY_LIMIT} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(LOGIN_BODY_TIMEOUT):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > LOGIN_BODY_LIMIT:
                    raise LoginInputError(f"a login body is at most {LOGIN_BODY_LIMIT} bytes", 413)
                chunks.append(chunk)
    except TimeoutError:
        raise LoginInputError("the login body did not arrive in time", 408) from None
    return b"".join(chunks)


class LoginRoutes:
    """GET/POST /login and /logout. With no key configured, both just send the browser on."""

    def __init__(self, access: AccessKey | None) -> None:
        self.access = access

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/login", self.form)
        app.router.add_post("/login", self.submit)
        app.router.add_get("/logout", self.logout)
        app.router.add_post("/logout", self.logout)

    async def form(self, request: web.Request) -> web.StreamResponse:
        target = safe_next(request.query.get("next"))
        if self.access is None or self.access.admits(request):
            raise web.HTTPSeeOther(target)
        response = web.Response(text=login_page(target), content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def submit(self, request: web.Request) -> web.StreamResponse:
        try:
            key, next_path = await _read_login_form(request)
        except LoginInputError as exc:
            response = json_error(exc.status, str(exc))
            response.force_close()  # what is left of the body is not worth reading
            return response
        target = safe_next(next_path)
        if self.access is None:
            raise web.HTTPSeeOther(target)
        if key is None or not self.access.matches(key):
            log.warning("front door: failed sign-in from %s", request.remote)
            if wants_html_post(request):
                page = login_page(target, error="That key is not right. Try again.")
                return web.Response(status=401, text=page, content_type="text/html")
            return json_error(401, "wrong access key")
        response = see_other(target)
        response.set_cookie(
            COOKIE,
            self.access.sessions.open(self.access.key),
            max_age=SESSION_LIFETIME,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request_is_https(request),
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        if self.access is not None:
            session = self.access.session_of(request)
            if session is not None:
                self.access.sessions.close(self.access.key, session)
        response = see_other("/login")
        response.del_cookie(COOKIE, path="/", secure=request_is_https(request), httponly=True, samesite="Lax")
        return response


def wants_html_post(request: web.BaseRequest) -> bool:
    """True when a form was posted by a browser page (so it should see the login page again)."""
    return "text/html" in request.headers.get("Accept", "")


def auth_middleware(access: AccessKey) -> Middleware:
    """One middleware for the whole front door: open paths pass, others need the key, and an
    unmatched route becomes a JSON 404/405 (only after the key was checked, so unknown paths leak nothing)."""

    @web.middleware
    async def check_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and not access.admits(request):
            response = refusal(request)
            if request.body_exists:
                response.force_close()  # never read, let alone decompress, a keyless body
            return response
        return await _handle_unmatched(request, handler)

    return check_key


@web.middleware
async def unmatched_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The same JSON 404/405 for a front door without a key."""
    return await _handle_unmatched(request, handler)


async def _handle_unmatched(request: web.Request, handler: Handler) -> web.StreamResponse:
    exc = request.match_info.http_exception
    if exc is None:
        return await handler(request)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allow = ",".join(sorted(exc.allowed_methods))
        return json_error(405, f"method {request.method} is not allowed here", Allow=allow)
    return json_error(exc.status, f"no such path: {request.path}")
