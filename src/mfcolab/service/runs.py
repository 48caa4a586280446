"""Routes for runs: list, get, create, heartbeat."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

from . import heartbeat, sql
from .clock import now_ms, now_s
from .database import db, updated_rows
from .http import ApiError, endpoint, json_text, not_found
from .inputs import as_object, check_name, is_number, opt_text, parse_json, path_ids, path_text, tags_json, text_list


@endpoint
async def list_runs(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    return json_text(await db(request).fetchval(sql.LIST_RUNS, flow_id))


@endpoint
async def get_run(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    text = await db(request).fetchval(sql.GET_RUN.get(ids.run), *ids.params)
    return not_found() if text is None else json_text(text)


def external_id(body: dict[str, Any], field: str) -> str | None:
    """An externally assigned id from a create body: a non-numeric string, or absent."""
    value = body.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or is_number(value):
        raise ApiError(
            400,
            f"{field} in the body must be a non-numeric string (an external id); "
            "numeric ids are assigned by the service",
        )
    return check_name(value, field)


@endpoint
async def create_run(request: web.Request) -> web.Response:
    flow_id = check_name(request.match_info["flow_id"], "flow_id")
    body = as_object(parse_json(await request.read()))
    run_id = external_id(body, "run_number")
    user_name = opt_text(body, "user_name")
    tags = tags_json(body, "tags")
    system_tags = text_list(body, "system_tags")
    beat = now_s() if heartbeat.capable(system_tags) else None
    try:
        text = await db(request).fetchval(
            sql.CREATE_RUN, flow_id, run_id, user_name, tags, json.dumps(system_tags), beat, now_ms()
        )
    except asyncpg.UniqueViolationError:
        raise ApiError(409, f"run {run_id} already exists in flow {flow_id}") from None
    except asyncpg.ForeignKeyViolationError:
        raise ApiError(404, f"flow {flow_id} does not exist; create it first") from None
    return json_text(text)


@endpoint
async def run_heartbeat(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    status = await db(request).execute(
        sql.RUN_HEARTBEAT.get(ids.run), *ids.params, now_s(), heartbeat.WAIT_SECONDS
    )
    return heartbeat.answer(updated_rows(status) > 0)
