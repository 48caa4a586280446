"""PATCH /flows/{f}/runs/{r}/tag/mutate: change a run's user tags in a serializable transaction.

Removals apply first, then additions; a tag that is already a system tag is never added and
cannot be removed (422). A concurrent mutation of the same run is a 409 the client retries.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

from . import sql
from .database import db
from .http import ApiError, endpoint, json_text
from .inputs import (
    TAG_MAX,
    as_object,
    check_tag_count,
    check_text,
    parse_json,
    path_ids,
)


def _tag_list(body: dict[str, Any], field: str) -> list[str]:
    value = body.get(field, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, f"{field} must be a list")
    if not all(isinstance(tag, str) for tag in value):
        raise ApiError(400, "All tag values must be strings")
    check_tag_count(value, field)
    for tag in value:
        check_text(tag, field, TAG_MAX)
    return value


def _stored_tags(text: str | None) -> list[str]:
    value = json.loads(text) if text else None
    return [tag for tag in value if isinstance(tag, str)] if isinstance(value, list) else []


def next_tags(current: list[str], system: list[str], add: list[str], remove: list[str]) -> list[str]:
    """The run's user tags after the mutation, keeping their order; new tags go last."""
    removing, system_set = set(remove), set(system)
    result = [tag for tag in dict.fromkeys(current) if tag not in removing]
    present = set(result)
    for tag in add:
        if tag not in system_set and tag not in present:
            result.append(tag)
            present.add(tag)
    return result


@endpoint
async def mutate_run_tags(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    body = as_object(parse_json(await request.read()))
    add = _tag_list(body, "tags_to_add")
    remove = _tag_list(body, "tags_to_remove")
    try:
        async with db(request).pool.acquire() as conn:
            async with conn.transaction(isolation="serializable"):
                row = await conn.fetchrow(sql.RUN_TAGS_FOR_UPDATE.get(ids.run), *ids.params)
                if row is None:
                    raise ApiError(404, f"{ids} does not exist")
                current, system = _stored_tags(row[1]), _stored_tags(row[2])
                blocked = set(remove) & set(system)
                if blocked:
                    raise ApiError(422, f"Cannot remove tags that are existing system tags {sorted(blocked)}")
                tags = next_tags(current, system, add, remove)
                if len(tags) > len(current):
                    check_tag_count(tags, "the run's tags")
                if tags != current:
                    await conn.execute(sql.SET_RUN_TAGS, ids.flow_id, row[0], json.dumps(tags))
    except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
        raise ApiError(409, "Conflicting concurrent tag mutation, please retry") from None
    return json_text(json.dumps({"tags": tags}))
