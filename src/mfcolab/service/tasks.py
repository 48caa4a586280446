"""Routes for tasks: list, get, create, heartbeat, filtered_tasks."""

from __future__ import annotations

import json

import asyncpg
from aiohttp import web

from . import heartbeat, sql
from .clock import now_ms, now_s
from .database import db, updated_rows
from .http import ApiError, endpoint, json_text, not_found
from .inputs import as_object, check_text, opt_text, parse_json, path_ids, text_list
from .runs import external_id


@endpoint
async def list_tasks(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return json_text(await db(request).fetchval(sql.LIST_TASKS.get(ids.run), *ids.params))


@endpoint
async def get_task(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    text = await db(request).fetchval(sql.GET_TASK.get(ids.run, ids.task), *ids.params)
    return not_found() if text is None else json_text(text)


@endpoint
async def create_task(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    body = as_object(parse_json(await request.read()))
    task_name = external_id(body, "task_id")
    user_name = opt_text(body, "user_name")
    tags = json.dumps(text_list(body, "tags"))
    system_tags = text_list(body, "system_tags")
    try:
        text = await db(request).fetchval(
            sql.CREATE_TASK.get(ids.run), *ids.params, task_name, user_name, tags,
            json.dumps(system_tags), heartbeat.capable(system_tags), now_s(), now_ms(),
        )
    except asyncpg.UniqueViolationError:
        raise ApiError(409, f"task {task_name} already exists in {ids}") from None
    if text is None:
        raise ApiError(404, f"{ids} does not exist; create it first")
    return json_text(text)


@endpoint
async def task_heartbeat(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    status = await db(request).execute(
        sql.TASK_HEARTBEAT.get(ids.run, ids.task), *ids.params, now_s(), heartbeat.WAIT_SECONDS
    )
    return heartbeat.answer(updated_rows(status) > 0)


@endpoint
async def filtered_tasks(request: web.Request) -> web.Response:
    """Pathspecs of the step's tasks with a metadata field whose value matches a POSIX regex
    (unanchored; the client anchors it). No parameters: every task with metadata."""
    ids = path_ids(request.match_info)
    field_name = request.query.get("metadata_field_name") or None
    pattern = request.query.get("pattern") or None
    if field_name is not None:
        check_text(field_name, "metadata_field_name")
    if pattern is not None:
        check_text(pattern, "pattern", 10_000)
    try:
        text = await db(request).fetchval(
            sql.FILTERED_TASKS.get(ids.run), *ids.params, field_name, pattern
        )
    except asyncpg.InvalidRegularExpressionError as exc:
        raise ApiError(400, f"pattern is not a valid regular expression: {exc}") from None
    return json_text(text)
