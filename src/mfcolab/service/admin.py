"""Service routes: ping (the client's version check), version, healthcheck, and the JSON
answer for any path or method the service does not have."""

from __future__ import annotations

import json

from aiohttp import web

from .database import db
from .http import VERSION, endpoint, json_text, message, plain_text

_HEALTHY = json.dumps(json.dumps({"status": "UP"}))


@endpoint
async def ping(request: web.Request) -> web.Response:
    return plain_text("pong")


@endpoint
async def version(request: web.Request) -> web.Response:
    return plain_text(VERSION, versioned=False)


@endpoint
async def healthcheck(request: web.Request) -> web.Response:
    """Upstream's double-encoded `{"status": "UP"}`, once the database answers."""
    await db(request).fetchval("SELECT 1")
    return json_text(_HEALTHY)


@endpoint
async def no_route(request: web.Request) -> web.Response:
    return message(404, f"no such route: {request.method} {request.path}")
