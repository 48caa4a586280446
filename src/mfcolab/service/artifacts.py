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
from .inputs import attempt_id, attempt_number, list_item, opt_text, path_ids, path_text, text_list
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


@endpoint
async def task_artifacts(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    text = await db(request).fetchval(sql.TASK_ARTIFACTS.get(ids.run, ids.task), *ids.params)
    return json_text(text)


@endpoint
async def task_attempt_artifacts(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    attempt = attempt_number(request.match_info["attempt_id"])
    text = await db(request).fetchval(
        sql.TASK_ATTEMPT_ARTIFACTS.get(ids.run, ids.task), *ids.params, attempt
    )
    return json_text(text)


@endpoint
async def get_artifact(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    name = path_text(request.match_info, "artifact_name")
    text = await db(request).fetchval(sql.GET_ARTIFACT.get(ids.run, ids.task), *ids.params, name)
    return not_found() if text is None else json_text(text)


@endpoint
async def get_artifact_attempt(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    name = path_text(request.match_info, "artifact_name")
    attempt = attempt_number(request.match_info["attempt_id"])
    text = await db(request).fetchval(
        sql.GET_ARTIFACT_ATTEMPT.get(ids.run, ids.task), *ids.params, name, attempt
    )
    return not_found() if text is None else json_text(text)


@endpoint
async def step_artifacts(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return json_text(await db(request).fetchval(sql.STEP_ARTIFACTS.get(ids.run), *ids.params))


@endpoint
async def run_artifacts(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return json_text(await db(request).fetchval(sql.RUN_ARTIFACTS.get(ids.run), *ids.params))
