"""Routes for flows: list, get, create."""

from __future__ import annotations

import json

import asyncpg
from aiohttp import web

from . import sql
from .clock import now_ms
from .database import db
from .http import ApiError, endpoint, json_text, not_found
from .inputs import as_object, check_name, opt_text, parse_json, path_text, text_list


@endpoint
async def list_flows(request: web.Request) -> web.Response:
    return json_text(await db(request).fetchval(sql.LIST_FLOWS))


@endpoint
async def get_flow(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    text = await db(request).fetchval(sql.GET_FLOW, flow_id)
    return not_found() if text is None else json_text(text)


@endpoint
async def create_flow(request: web.Request) -> web.Response:
    flow_id = check_name(request.match_info["flow_id"], "flow_id")
    body = as_object(parse_json(await request.read()))
    user_name = opt_text(body, "user_name")
    # A flow created by the client has null tags, as upstream stores them.
    tags = "null" if body.get("tags") is None else json.dumps(text_list(body, "tags"))
    system_tags = "null" if body.get("system_tags") is None else json.dumps(text_list(body, "system_tags"))
    try:
        text = await db(request).fetchval(sql.CREATE_FLOW, flow_id, user_name, tags, system_tags, now_ms())
    except asyncpg.UniqueViolationError:
        raise ApiError(409, f"flow {flow_id} already exists") from None
    return json_text(text)
