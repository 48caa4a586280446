"""Routes the UI calls once per page load: features, plugins, links, notifications, version;
the JSON 404 for any other path. The WebSocket is `websocket.py`."""

from __future__ import annotations

import json

from aiohttp import web

from .. import __version__
from ..service.http import endpoint, json_text, message, plain_text

# The artifact table is off in the UI by default; the connection dot would only say that no
# live updates arrive. Search is `search.py`.
FEATURES = {"FEATURE_ARTIFACT_TABLE": True, "FEATURE_ARTIFACT_SEARCH": True, "FEATURE_FOREACH_VAR_SEARCH": True}
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


@endpoint
async def no_route(request: web.Request) -> web.Response:
    return message(404, f"no such route: {request.method} {request.path}")
