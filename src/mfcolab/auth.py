"""The access key: who may pass the front door, and the browser login that trades the key for a cookie.

A request is let in when it carries the key in the `x-api-key` header (what the Metaflow client
sends from METAFLOW_SERVICE_AUTH_KEY) or the session cookie that POST /login hands out. The cookie
holds an HMAC of the key, never the key itself, so a leaked cookie does not reveal the key, and a
new key invalidates every cookie. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import logging
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

HEADER = "x-api-key"
COOKIE = "mfcolab_session"
COOKIE_MAX_AGE = 30 * 24 * 3600
OPEN_PATHS = frozenset({"/healthz", "/login", "/logout"})
_COOKIE_LABEL = b"mfcolab front door session v1"
_MAX_KEY_LENGTH = 4096


class AccessKey:
    """Holds the key and the cookie value derived from it; answers whether a request carries either."""

    __slots__ = ("_key", "_key_bytes", "cookie_value")

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the access key must not be empty")
        self._key = key
        self._key_bytes = key.encode()
        self.cookie_value = hmac.new(self._key_bytes, _COOKIE_LABEL, hashlib.sha256).hexdigest()

    def matches(self, supplied: str) -> bool:
        """True when `supplied` is the key. Non-ASCII input is compared as UTF-8 bytes."""
        try:
            return hmac.compare_digest(supplied, self._key)
        except TypeError:
            return hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), self._key_bytes)

    def admits(self, request: web.BaseRequest) -> bool:
        """True when the request carries the key in the header or a valid session cookie."""
        supplied = request.headers.get(HEADER)
        if supplied is not None:
            return self.matches(supplied)
        if "Cookie" not in request.headers:
            return False
        cookie = request.cookies.get(COOKIE)
        if cookie is None:
            return False
        try:
            return hmac.compare_digest(cookie, self.cookie_value)
        except TypeError:
            return False


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
    """The 401 for a request without a valid key: the login page for a browser, JSON for everyone else."""
    if wants_html(request):
        page = login_page(next_path=request.rel_url.raw_path_qs, error="Sign in with the mfcolab access key.")
        response = web.Response(status=401, text=page, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response
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
<p class="note">The key is printed by <code>mfcolab up</code> and kept in the root folder.</p>
</body>
</html>
"""


def login_page(next_path: str, error: str = "") -> str:
    return _PAGE.format(next_path=html.escape(safe_next(next_path), quote=True), error=html.escape(error))


class LoginInputError(ValueError):
    """The login body is not a form or JSON object with a string 'key'."""


async def _read_login_form(request: web.Request) -> tuple[str | None, str]:
    """The submitted key and next path, from a form or a JSON object. Raises LoginInputError on garbage."""
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise LoginInputError("login body is not valid JSON") from None
        if not isinstance(data, dict):
            raise LoginInputError("login body must be a JSON object with a 'key' field")
        key, next_path = data.get("key"), data.get("next")
    else:
        try:
            form = await request.post()
        except (ValueError, UnicodeDecodeError):
            raise LoginInputError("login body is not a valid form") from None
        key, next_path = form.get("key"), form.get("next")
    if key is not None and not isinstance(key, str):
        raise LoginInputError("'key' must be a string")
    return key, next_path if isinstance(next_path, str) else "/"


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
            return json_error(400, str(exc))
        target = safe_next(next_path)
        if self.access is None:
            raise web.HTTPSeeOther(target)
        if key is None or len(key) > _MAX_KEY_LENGTH or not self.access.matches(key):
            log.warning("front door: failed sign-in from %s", request.remote)
            if wants_html_post(request):
                page = login_page(target, error="That key is not right. Try again.")
                return web.Response(status=401, text=page, content_type="text/html")
            return json_error(401, "wrong access key")
        response = see_other(target)
        response.set_cookie(
            COOKIE,
            self.access.cookie_value,
            max_age=COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request_is_https(request),
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
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
        if not access.admits(request) and request.path not in OPEN_PATHS:
            return refusal(request)
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
