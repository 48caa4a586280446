"""Routes for metadata: post a task's list, read a task's or a run's rows.

A POST is one statement: it resolves the task and inserts every row of the posted list
(the body's own JSON, checked first), so an unknown
run or task is a 400 and nothing else needs a round trip. The same field may be posted
again (the client re-sends system metadata on each attempt): rows are never merged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import sql
from .clock import now_ms
from .database import db
from .http import ApiError, endpoint, json_text
from .inputs import as_list, body_text, check_value, list_item, opt_text, parse_json, path_ids, text_list
from .sql import Keyed

NOT_REGISTERED = "need to register run_id and task_id first"


_TEXT_FIELDS = ("field_name", "type", "user_name")


def check_metadata(items: list[Any]) -> None:
    """Every item an object with text fields (missing ones default to " " in SQL), tag lists
    and any JSON value; a null value means the row is not stored."""
    for index, raw in enumerate(items):
        item = list_item(raw, index)
        for field in _TEXT_FIELDS:
            opt_text(item, field)
        check_value(item.get("value"))
        text_list(item, "tags")
        text_list(item, "system_tags")


async def post_task_list(request: web.Request, statement: Keyed, check: Callable[[list[Any]], None],
                         counted: str) -> web.Response:
    """POST of a list of rows for one task (metadata or artifacts): one statement resolves the
    task and inserts the rows, skipping duplicates; an unknown task is a 400, as upstream."""
    ids = path_ids(request.match_info)
    text = body_text(await request.read())
    check(as_list(parse_json(text)))
    row = await db(request).fetchrow(statement.get(ids.run, ids.task), *ids.params, now_ms(), text)
    if row is None or row[0] == 0:
        raise ApiError(400, NOT_REGISTERED)
    return json_text(json.dumps({counted: row[1]}))


@endpoint
async def create_metadata(request: web.Request) -> web.Response:
    return await post_task_list(request, sql.CREATE_METADATA, check_metadata, "metadata_created")


@endpoint
async def task_metadata(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    text = await db(request).fetchval(sql.TASK_METADATA.get(ids.run, ids.task), *ids.params)
    return json_text(text)


@endpoint
async def run_metadata(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return json_text(await db(request).fetchval(sql.RUN_METADATA.get(ids.run), *ids.params))
