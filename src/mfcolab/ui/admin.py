"""Routes the UI calls once per page load: features, plugins, links, notifications, version;
the WebSocket (ping/pong only: live updates are not sent yet); the JSON 404 for any other path."""

from __future__ import annotations

import json

from aiohttp import WSMsgType, web

from .. import __version__
from ..service.http import endpoint, json_text, message, plain_text

# The artifact table is off in the UI by default; the connection dot would only say that no
# live updates arrive.
FEATURES = {"FEATURE_ARTIFACT_TABLE": True}
LINKS = [{"href": "https://docs.metaflow.org/", "label": "Metaflow documentation"}]


@endpoint
async def features(request: web.Request) -> web.Response:
    return json_text(json.dumps(FEATURES))


@endpoint
async def plugins(request: web.Request) -> web.Response:
    return json_text("[]")


@endpoint
async def links(request: web.Request) -> web.Response:
    return json_text(json.dumps(LINKS))


@endpoint
async def notifications(request: web.Request) -> web.Response:
    return json_text("[]")


@endpoint
async def version(request: web.Request) -> web.Response:
    return plain_text(f"mfcolab {__version__}", versioned=False)


async def websocket(request: web.Request) -> web.StreamResponse:
    """`__ping__` gets `__pong__`; subscriptions are accepted and answered by nothing yet."""
    socket = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
    if not socket.can_prepare(request).ok:
        return message(400, "this route takes a WebSocket upgrade")
    await socket.prepare(request)
    async for frame in socket:
        if frame.type == WSMsgType.TEXT and frame.data == "__ping__":
            await socket.send_str("__pong__")
    return socket


@endpoint
async def no_route(request: web.Request) -> web.Response:
    return message(404, f"no such route: {request.method} {request.path}")
