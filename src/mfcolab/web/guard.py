"""What every request meets before the key is checked, and what every response carries.

    security_headers   on every response, the UI's and the login page's included: no framing
                       by another origin (X-Frame-Options, CSP frame-ancestors; the UI frames
                       its own cards), no MIME sniffing, no Referer off-site
    guard_middleware   in order:
                       - Host must name the door itself when it has no key (DNS rebinding)
                       - a state-changing request from another site is refused (Sec-Fetch-Site,
                         else Origin against Host): cookies and a keyless door are not enough
                       - at most MAX_UNAUTHENTICATED requests without the key (nor a session)
                         are in flight; the rest get a 503 at once
                       - a compressed body is refused (400) except on routes that pass bodies on
                         unread (the server does not decompress: see SERVER_SETTINGS)
    SERVER_SETTINGS    aiohttp's own limits for the door's server: no automatic decompression,
                       short lingering, a bounded keep-alive (which aiohttp also applies to a
                       connection that never completes its first request: slowloris)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .auth import AccessKey, json_error, original_host

MAX_UNAUTHENTICATED = 32
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PASSES_ENCODED_BODIES = "mfcolab_passes_encoded_bodies"

SERVER_SETTINGS: dict[str, Any] = {
    "auto_decompress": False,
    "keepalive_timeout": 75.0,
    "lingering_time": 2.0,
    "max_field_size": 8190,
    "max_headers": 100,
}

_HEADERS = {
    "X-Frame-Options": "SAMEORIGIN",  # the UI shows a card in a frame of its own origin
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_FRAME_ANCESTORS = "frame-ancestors 'self'"


def passes_encoded_bodies(handler: Handler) -> Handler:
    """Mark a route that forwards bodies as they are (so a Content-Encoding is the upstream's business)."""
    setattr(handler, PASSES_ENCODED_BODIES, True)
    return handler


async def security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """An on_response_prepare hook: framing, sniffing and referrer rules on every answer."""
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    policy = response.headers.get("Content-Security-Policy")
    if policy is None:
        response.headers["Content-Security-Policy"] = _FRAME_ANCESTORS
    elif "frame-ancestors" not in policy:
        response.headers["Content-Security-Policy"] = f"{policy.rstrip('; ')}; {_FRAME_ANCESTORS}"


def guard_middleware(access: AccessKey | None, limit: int = MAX_UNAUTHENTICATED) -> Middleware:
    """The checks that come before the key (see the module docstring). `access=None`: a keyless door."""
    counter = _InFlight(limit)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if access is None and not _names_this_door(request):
            return _closing(json_error(421, f"this door answers only to {', '.join(sorted(LOCAL_HOSTS))}"))
        if request.method not in SAFE_METHODS and _cross_site(request):
            return _closing(json_error(403, "refused a state-changing request from another site"))
        if _encoded(request) and not getattr(request.match_info.handler, PASSES_ENCODED_BODIES, False):
            return _closing(json_error(400, "compressed request bodies are not accepted here; send it uncompressed"))
        if access is None or access.admits(request):
            return await handler(request)  # a keyless door is on 127.0.0.1 only
        if not counter.enter():
            response = _closing(json_error(503, "too many requests without the access key; retry shortly"))
            response.headers["Retry-After"] = "5"
            return response
        try:
            return await handler(request)
        finally:
            counter.leave()

    return guard


class _InFlight:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def enter(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


def _encoded(request: web.BaseRequest) -> bool:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return encoding not in ("", "identity")


def _names_this_door(request: web.BaseRequest) -> bool:
    host = _hostname(request.host)
    return host is not None and host in LOCAL_HOSTS


def _hostname(authority: str) -> str | None:
    try:
        return urlsplit("//" + authority).hostname
    except ValueError:
        return None


def _cross_site(request: web.BaseRequest) -> bool:
    """True when a browser says the request comes from a page of another origin.

    Sec-Fetch-Site is set by every current browser; Origin is the fallback. A request with
    neither (curl, the Metaflow client) is not a browser's cross-site request."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    if origin.strip().lower() == "null":
        return True
    return _hostport(urlsplit(origin).netloc) not in _door_authorities(request)


def _door_authorities(request: web.BaseRequest) -> set[str]:
    """The names this door goes by for this request: its Host, and the host a proxy on this machine
    says the browser asked for (cloudflared, Colab's port proxy)."""
    return {_hostport(name.split(",")[0].strip()) for name in (request.host, original_host(request)) if name}


def _hostport(authority: str) -> str:
    return authority.strip().lower().removesuffix(":443").removesuffix(":80")


def add_security_headers(app: web.Application) -> None:
    app.on_response_prepare.append(security_headers)

