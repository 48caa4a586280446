"""Routes for steps: list, get, create."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from . import sql
from .clock import now_ms
from .database import db
from .http import ApiError, endpoint, json_text, not_found
from .inputs import as_object, check_name, opt_text, parse_json, path_text, run_key, tags_json


@endpoint
async def list_steps(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    run = run_key(request.match_info["run_number"])
    return json_text(await db(request).fetchval(sql.LIST_STEPS.get(run), flow_id, run.value))


@endpoint
async def get_step(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    run = run_key(request.match_info["run_number"])
    step_name = path_text(request.match_info, "step_name")
    text = await db(request).fetchval(sql.GET_STEP.get(run), flow_id, run.value, step_name)
    return not_found() if text is None else json_text(text)


@endpoint
async def create_step(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    run = run_key(request.match_info["run_number"])
    step_name = check_name(request.match_info["step_name"], "step_name")
    body = as_object(parse_json(await request.read()))
    user_name = opt_text(body, "user_name")
    tags, system_tags = tags_json(body, "tags"), tags_json(body, "system_tags")
    try:
        text = await db(request).fetchval(
            sql.CREATE_STEP.get(run), flow_id, run.value, step_name, user_name, tags, system_tags, now_ms()
        )
    except asyncpg.UniqueViolationError:
        raise ApiError(409, f"step {step_name} already exists in run {run.value} of flow {flow_id}") from None
    if text is None:
        raise ApiError(404, f"run {run.value} of flow {flow_id} does not exist; create it first")
    return json_text(text)
