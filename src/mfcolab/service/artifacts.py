"""Routes for artifacts: post a task's list; read the latest attempt or a chosen one.

The latest attempt of a task is its highest attempt_id; a single artifact's latest attempt
is that of the artifact called "name", which every attempt writes (the upstream rule).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import sql
from .database import db
from .http import endpoint, json_text, not_found
from .inputs import (
    Key,
    attempt_id,
    attempt_number,
    list_item,
    opt_text,
    path_text,
    run_key,
    task_key,
    text_list,
)
from .metadata import post_task_list

_TEXT_FIELDS = ("name", "location", "ds_type", "sha", "type", "content_type", "user_name")


def check_artifacts(items: list[Any]) -> None:
    """Every item an object with text fields (missing ones default to " " in SQL), an
    attempt_id that fits SMALLINT, and tag lists."""
    for index, raw in enumerate(items):
        item = list_item(raw, index)
        for field in _TEXT_FIELDS:
            opt_text(item, field)
        attempt_id(item)
        text_list(item, "tags")
        text_list(item, "system_tags")


@endpoint
async def create_artifacts(request: web.Request) -> web.Response:
    return await post_task_list(request, sql.CREATE_ARTIFACTS, check_artifacts, "artifacts_created")


def _task_path(request: web.Request) -> tuple[str, Key, str, Key]:
    match = request.match_info
    return (
        path_text(match, "flow_id"),
        run_key(match["run_number"]),
        path_text(match, "step_name"),
        task_key(match["task_id"]),
    )


@endpoint
async def task_artifacts(request: web.Request) -> web.Response:
    flow_id, run, step_name, task = _task_path(request)
    text = await db(request).fetchval(sql.TASK_ARTIFACTS.get(run, task), flow_id, run.value, step_name, task.value)
    return json_text(text)


@endpoint
async def task_attempt_artifacts(request: web.Request) -> web.Response:
    flow_id, run, step_name, task = _task_path(request)
    attempt = attempt_number(request.match_info["attempt_id"])
    text = await db(request).fetchval(
        sql.TASK_ATTEMPT_ARTIFACTS.get(run, task), flow_id, run.value, step_name, task.value, attempt
    )
    return json_text(text)


@endpoint
async def get_artifact(request: web.Request) -> web.Response:
    flow_id, run, step_name, task = _task_path(request)
    name = path_text(request.match_info, "artifact_name")
    text = await db(request).fetchval(sql.GET_ARTIFACT.get(run, task), flow_id, run.value, step_name, task.value, name)
    return not_found() if text is None else json_text(text)


@endpoint
async def get_artifact_attempt(request: web.Request) -> web.Response:
    flow_id, run, step_name, task = _task_path(request)
    name = path_text(request.match_info, "artifact_name")
    attempt = attempt_number(request.match_info["attempt_id"])
    text = await db(request).fetchval(
        sql.GET_ARTIFACT_ATTEMPT.get(run, task), flow_id, run.value, step_name, task.value, name, attempt
    )
    return not_found() if text is None else json_text(text)


@endpoint
async def step_artifacts(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    run = run_key(request.match_info["run_number"])
    step_name = path_text(request.match_info, "step_name")
    return json_text(await db(request).fetchval(sql.STEP_ARTIFACTS.get(run), flow_id, run.value, step_name))


@endpoint
async def run_artifacts(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    run = run_key(request.match_info["run_number"])
    return json_text(await db(request).fetchval(sql.RUN_ARTIFACTS.get(run), flow_id, run.value))
