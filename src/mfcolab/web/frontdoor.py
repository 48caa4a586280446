"""The front door on port 7860: one authenticated origin for the metadata service, the UI backend and the UI.

    /healthz      open; {"status": "ok"}
    /login        browser sign-in with the access key (sets the session cookie); /logout clears it
    /metadata/*   the metadata service: an in-process aiohttp app (native engine) or an Upstream
                  that runs with PATH_PREFIX=/metadata (official engine); paths go through unchanged
    /api/*        the UI API, HTTP and WebSocket: mfcolab's own (mfcolab.ui, in-process, --ui native)
                  or upstream's UI backend (PATH_PREFIX=/api, --ui official)
    /*            the metaflow-ui bundle (static.py), index.html with window.METAFLOW_SERVICE="/api"

This module assembles the door: the guard (guard.py) and the key (auth.py) in front of every
route, the reverse proxy (proxy.py) for an upstream, the UI's files (static.py). Binding is the
caller's job: use make_runner(app), so that no header, cookie or raw request bytes (which aiohttp
puts into its parser errors) reach a log line.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .auth import AccessKey, LoginRoutes, auth_middleware, unmatched_as_json
from .guard import SERVER_SETTINGS, add_security_headers, guard_middleware
from .proxy import Forwarder, Upstream
from .sessions import SessionStore
from .static import UI_SERVICE_PATH, StaticUI

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'
DEFAULT_CLIENT_MAX_SIZE = 64 * 1024**2


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
