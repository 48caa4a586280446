"""Routes for steps: list, get, create."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from . import sql
from .clock import now_ms
from .database import db
from .http import ApiError, endpoint, json_text, not_found
from .inputs import as_object, check_name, opt_text, parse_json, path_ids, tags_json


@endpoint
async def list_steps(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return json_text(await db(request).fetchval(sql.LIST_STEPS.get(ids.run), *ids.params))


@endpoint
async def get_step(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    text = await db(request).fetchval(sql.GET_STEP.get(ids.run), *ids.params)
    return not_found() if text is None else json_text(text)


@endpoint
async def create_step(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    check_name(request.match_info["step_name"], "step_name")
    body = as_object(parse_json(await request.read()))
    user_name = opt_text(body, "user_name")
    tags, system_tags = tags_json(body, "tags"), tags_json(body, "system_tags")
    try:
        text = await db(request).fetchval(
            sql.CREATE_STEP.get(ids.run), *ids.params, user_name, tags, system_tags, now_ms()
        )
    except asyncpg.UniqueViolationError:
        raise ApiError(409, f"{ids} already exists") from None
    if text is None:
        raise ApiError(404, f"{ids.parent} does not exist; create it first")
    return json_text(text)
