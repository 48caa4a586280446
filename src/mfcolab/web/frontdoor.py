"""The front door on port 7860: one authenticated origin for the metadata service, the UI backend and the UI.

    /healthz      open; {"status": "ok"}
    /login        browser sign-in with the access key (sets the session cookie); /logout clears it
    /metadata/*   the metadata service: an in-process aiohttp app (native engine) or an Upstream
                  that runs with PATH_PREFIX=/metadata (official engine); paths go through unchanged
    /api/*        the UI API, HTTP and WebSocket: mfcolab's own (mfcolab.ui, in-process, --ui native)
                  or upstream's UI backend (PATH_PREFIX=/api, --ui official)
    /*            the metaflow-ui bundle, index.html with window.METAFLOW_SERVICE="/api", SPA fallback

Proxied bodies are streamed both ways and WebSocket upgrades are relayed frame by frame. Binding
is the caller's job: use make_runner(app), so that no header, cookie or raw request bytes (which
aiohttp puts into its parser errors) reach a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from mfcolab.errors import ConfigError
from mfcolab.web.auth import (
    COOKIE,
    HEADER,
    AccessKey,
    LoginRoutes,
    auth_middleware,
    json_error,
    original_scheme,
    unmatched_as_json,
)
from mfcolab.web.guard import (
    SERVER_SETTINGS,
    add_security_headers,
    guard_middleware,
    passes_encoded_bodies,
)
from mfcolab.web.sessions import SessionStore

log = logging.getLogger(__name__)

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'
UI_SERVICE_PATH = "/api"
DEFAULT_CLIENT_MAX_SIZE = 64 * 1024**2

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
# What the client-side WebSocket handshake sets itself.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Upstream:
    """An HTTP service the front door forwards to, e.g. Upstream("http://127.0.0.1:8083", "UI backend").

    The request path goes through unchanged, so the upstream runs under the same prefix."""

    url: str
    name: str = "upstream service"

    def __post_init__(self) -> None:
        try:
            parsed = URL(self.url)
        except (ValueError, TypeError):
            parsed = URL()
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(
                f"upstream URL {self.url!r} is not an http(s) URL", "give a base URL like http://127.0.0.1:8083"
            )
        if parsed.path not in ("", "/") or parsed.query_string or parsed.fragment:
            raise ConfigError(f"upstream URL {self.url!r} has a path", "give only scheme, host and port")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    def target(self, raw_path_qs: str) -> URL:
        return URL(self.url + raw_path_qs, encoded=True)


class WireSafeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The server's error logger. aiohttp's parser errors quote the raw bytes of a malformed request
    (a header line with the key in it, say); this logs their class and status instead."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            kwargs["exc_info"] = None
            msg = f"{msg} ({type(exc).__name__}, status {exc.code})"
        return msg, kwargs


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """An AppRunner whose access and error logs carry no secrets."""
    server_log = WireSafeLog(logging.getLogger(__name__ + ".http"), {})
    return web.AppRunner(app, access_log_format=ACCESS_LOG_FORMAT, logger=server_log, **{**SERVER_SETTINGS, **kwargs})


def create_app(
    key: str | None,
    metadata: web.Application | Upstream | None,
    api: web.Application | Upstream | None = None,
    static_dir: Path | None = None,
    *,
    client_max_size: int = DEFAULT_CLIENT_MAX_SIZE,
    key_file: Path | None = None,
    sessions_file: Path | None = None,
) -> web.Application:
    """Build the front door. `key=None` turns auth off (the caller allows that only on 127.0.0.1).

    `client_max_size` bounds bodies read whole by in-process handlers (the native service's JSON);
    proxied bodies are streamed and not bounded by it. With `key_file`, a new key written there
    replaces `key` in the running door; `sessions_file` keeps browser sessions across restarts."""
    access = (
        AccessKey(key, key_file=key_file, sessions=SessionStore(sessions_file)) if key is not None else None
    )
    middleware = auth_middleware(access) if access is not None else unmatched_as_json
    app = web.Application(middlewares=[guard_middleware(access), middleware], client_max_size=client_max_size)
    add_security_headers(app)
    forwarder = Forwarder()
    app.cleanup_ctx.append(forwarder.session_context)

    app.router.add_get("/healthz", healthz, allow_head=True)
    LoginRoutes(access).add_to(app)
    if isinstance(metadata, web.Application):
        app.add_subapp("/metadata", metadata)
    elif isinstance(metadata, Upstream):
        forwarder.mount(app, "/metadata", metadata)
    if isinstance(api, web.Application):
        app.add_subapp(UI_SERVICE_PATH, api)
    elif isinstance(api, Upstream):
        forwarder.mount(app, UI_SERVICE_PATH, api)
    if static_dir is not None:
        StaticUI(static_dir, live_logs=isinstance(api, web.Application)).add_to(app)
    else:
        app.router.add_get("/", landing)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def landing(request: web.Request) -> web.Response:
    return web.json_response({"service": "mfcolab", "metadata": "/metadata", "ui": None})


class Forwarder:
    """Forwards HTTP requests and WebSocket sessions to upstreams over one keep-alive client session.

    The defaults suit the front door. A local relay to a public URL (relay.py) passes the access
    key on (`keep_key`), goes through the proxy the environment names (`trust_env`), and answers
    `unreachable_status` (503, which the Metaflow client retries) while the upstream is away, or
    while it answers one of `gone_statuses` (Cloudflare's 530 for a tunnel with no connector)."""

    def __init__(
        self,
        *,
        keep_key: bool = False,
        trust_env: bool = False,
        unreachable_status: int | None = None,
        gone_statuses: frozenset[int] = frozenset(),
    ) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.keep_key = keep_key
        self.trust_env = trust_env
        self.unreachable_status = unreachable_status
        self.gone_statuses = gone_statuses

    async def session_context(self, app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            trust_env=self.trust_env,
        )
        try:
            yield
        finally:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the front door is not started")
        return self._session

    def mount(self, app: web.Application, prefix: str, upstream: Upstream) -> None:
        @passes_encoded_bodies
        async def forward(request: web.Request) -> web.StreamResponse:
            return await self.forward(request, upstream)

        app.router.add_route("*", prefix, forward)
        app.router.add_route("*", prefix + "/{tail:.*}", forward)

    async def forward(self, request: web.Request, upstream: Upstream) -> web.StreamResponse:
        """Forward one request (HTTP or a WebSocket upgrade) to `upstream`."""
        if _is_websocket_upgrade(request):
            return await self.relay_websocket(request, upstream)
        return await self.forward_http(request, upstream)

    def _upstream_headers(self, request: web.Request, drop: frozenset[str]) -> CIMultiDict[str]:
        headers = upstream_headers(request, drop=drop)
        if self.keep_key and HEADER in request.headers:
            headers[HEADER] = request.headers[HEADER]
        return headers

    async def forward_http(self, request: web.Request, upstream: Upstream) -> web.StreamResponse:
        headers = self._upstream_headers(request, HOP_BY_HOP)
        body = request.content if request.body_exists else None
        try:
            answer = await self.session.request(
                request.method,
                upstream.target(request.rel_url.raw_path_qs),
                headers=headers,
                data=body,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return _unreachable(upstream, exc, self.unreachable_status)
        if answer.status in self.gone_statuses:
            answer.release()
            return _unreachable(upstream, GoneUpstream(answer.status), self.unreachable_status)
        try:
            return await _stream_back(request, answer, upstream)
        finally:
            answer.release()

    async def relay_websocket(self, request: web.Request, upstream: Upstream) -> web.StreamResponse:
        if not web.WebSocketResponse().can_prepare(request).ok:
            return json_error(400, "not a valid WebSocket handshake")
        headers = self._upstream_headers(request, HOP_BY_HOP | _WS_HANDSHAKE)
        protocols = _offered_protocols(request)
        try:
            remote = await self.session.ws_connect(
                upstream.target(request.rel_url.raw_path_qs),
                headers=headers,
                protocols=protocols,
                autoping=True,
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status if 400 <= exc.status < 600 else 502
            return json_error(status, f"the {upstream.name} refused the WebSocket ({exc.status} {exc.message})")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return _unreachable(upstream, exc, self.unreachable_status)
        async with remote:
            chosen = (remote.protocol,) if remote.protocol else ()
            local = web.WebSocketResponse(protocols=chosen, max_msg_size=0, heartbeat=30.0)
            await local.prepare(request)
            await _relay_frames(local, remote)
        return local


async def _stream_back(
    request: web.Request, answer: aiohttp.ClientResponse, upstream: Upstream
) -> web.StreamResponse:
    """Send the upstream's answer on as it arrives, chunk by chunk."""
    response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=downstream_headers(answer))
    try:
        await response.prepare(request)
        while True:
            try:
                chunk = await answer.content.readany()
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                # The status line is gone already: cut the connection so the client sees a
                # truncated body rather than a short one that looks complete.
                log.warning(
                    "front door: %s broke off its answer to %s (%s)", upstream.name, request.path, type(exc).__name__
                )
                if request.transport is not None:
                    request.transport.abort()
                return response
            if not chunk:
                break
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        log.debug("front door: client left during %s", request.path)
    return response


async def _relay_frames(local: web.WebSocketResponse, remote: aiohttp.ClientWebSocketResponse) -> None:
    """Copy messages both ways until one side closes, then close the other side with the same code."""
    to_remote = asyncio.create_task(_pump(local, remote))
    to_local = asyncio.create_task(_pump(remote, local))
    try:
        done, _ = await asyncio.wait({to_remote, to_local}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_remote, to_local):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    first = done.pop()
    source, sink = (local, remote) if first is to_remote else (remote, local)
    code = _sendable_close_code(source.close_code)
    reason = b"" if source.close_code is not None else b"peer went away"
    with contextlib.suppress(ConnectionError, RuntimeError):
        await sink.close(code=code, message=reason)
    if not source.closed:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await source.close(code=code)


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is aiohttp.WSMsgType.ERROR:
            return


def _sendable_close_code(code: int | None) -> int:
    """A close code that may go on the wire (1005/1006/1015 are reserved for reporting only)."""
    if code is None or code in (1005, 1006, 1015):
        return 1011 if code in (None, 1006) else 1000
    if 1000 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1000


def _is_websocket_upgrade(request: web.BaseRequest) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


def _offered_protocols(request: web.BaseRequest) -> tuple[str, ...]:
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return tuple(p.strip() for p in offered.split(",") if p.strip())


def _connection_tokens(headers: Iterable[str]) -> set[str]:
    return {token.strip().lower() for value in headers for token in value.split(",")}


def upstream_headers(request: web.BaseRequest, drop: frozenset[str]) -> CIMultiDict[str]:
    """The request headers as the upstream should see them: no hop-by-hop headers, no access key,
    no session cookie, the Host left to the client, and X-Forwarded-* describing the original request."""
    incoming = request.headers
    drop = drop | _connection_tokens(incoming.getall("Connection", ()))
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in drop or lower == "host" or lower == HEADER:
            continue
        if lower == "cookie":
            value = _without_session_cookie(value)
            if not value:
                continue
        headers.add(name, value)
    headers["X-Forwarded-Proto"] = original_scheme(request)
    headers["X-Forwarded-Host"] = incoming.get("X-Forwarded-Host") or request.host
    peer = request.remote or ""
    earlier = incoming.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{earlier}, {peer}" if earlier else peer
    return headers


def _without_session_cookie(cookie_header: str) -> str:
    kept = [
        part
        for part in cookie_header.split(";")
        if part.strip() and part.split("=", 1)[0].strip() != COOKIE
    ]
    return ";".join(kept).strip()


def downstream_headers(answer: aiohttp.ClientResponse) -> CIMultiDict[str]:
    """The upstream's response headers without hop-by-hop ones (the front door frames the body itself)."""
    drop = HOP_BY_HOP | _connection_tokens(answer.headers.getall("Connection", ()))
    return CIMultiDict((name, value) for name, value in answer.headers.items() if name.lower() not in drop)


class GoneUpstream(Exception):
    """The upstream's edge answered that nothing is behind it (e.g. HTTP 530)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _unreachable(upstream: Upstream, exc: BaseException, status: int | None = None) -> web.Response:
    log.warning("front door: %s at %s is not answering: %s", upstream.name, upstream.url, type(exc).__name__)
    status = status or (504 if isinstance(exc, asyncio.TimeoutError) else 502)
    what = f"answered {exc}" if isinstance(exc, GoneUpstream) else type(exc).__name__
    return json_error(status, f"the {upstream.name} at {upstream.url} is not answering ({what})")


# First path segments that belong to the services, never to the UI's client-side routes.
_SERVICE_SEGMENTS = frozenset({"api", "metadata"})


class StaticUI:
    """The metaflow-ui bundle at /: files as they are, index.html with the service URL injected
    (and, with mfcolab's UI backend, `live_logs`, the faster poll of a running task's log),
    and index.html for any other path (client-side routes), except under /static/ and the
    services' prefixes, where a missing path is a JSON 404."""

    def __init__(self, root: Path, service_url: str = UI_SERVICE_PATH, *, live_logs: bool = False) -> None:
        self.root = root.resolve()
        index = self.root / "index.html"
        if not index.is_file():
            raise ConfigError(
                f"the UI bundle at {root} has no index.html", "point it at an unpacked metaflow-ui release"
            )
        page = inject_service_url(index.read_text(encoding="utf-8"), service_url)
        self.index = (inject_head_script(page, LOG_POLL_SCRIPT) if live_logs else page).encode()

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/{tail:.*}", self.serve)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        relative = request.match_info["tail"]
        if relative in ("", "index.html"):
            return self._index()
        path = self._file(relative)
        if path is not None:
            return web.FileResponse(path)
        if relative.startswith("static/"):
            return json_error(404, f"no such file in the UI bundle: /{relative}")
        if relative.split("/", 1)[0] in _SERVICE_SEGMENTS:
            return json_error(404, f"no such path: /{relative}")
        return self._index()

    def _file(self, relative: str) -> Path | None:
        """The bundle file at `relative`, or None when absent or outside the bundle."""
        if "\x00" in relative:
            return None
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def _index(self) -> web.Response:
        response = web.Response(body=self.index, content_type="text/html", charset="utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return response


# The UI asks for a running task's log every 20 s, its only 20-second timer; mfcolab's UI backend
# has the log while the task runs (service/livelogs.py), so the page asks every 2 s instead.
LOG_POLL_SCRIPT = (
    "<script>(function(){var stock=window.setTimeout;window.setTimeout=function(){"
    "var args=Array.prototype.slice.call(arguments);if(args[1]===20000){args[1]=2000;}"
    "return stock.apply(window,args);};})();</script>"
)


def inject_service_url(index_html: str, service_url: str) -> str:
    """index.html with `window.METAFLOW_SERVICE` set, placed just before </head>."""
    return inject_head_script(index_html, f"<script>window.METAFLOW_SERVICE={json.dumps(service_url)};</script>")


def inject_head_script(index_html: str, script: str) -> str:
    """index.html with `script` placed just before </head> (first, without a head)."""
    at = index_html.lower().find("</head>")
    if at < 0:
        return script + index_html
    return index_html[:at] + script + index_html[at:]
