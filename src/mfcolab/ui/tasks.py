"""Routes for tasks, one row per attempt: a run's, a step's, one task's attempts.

`taskId=1,2,3` (the UI's refine call) narrows a run's list to those task ids."""

from __future__ import annotations

from aiohttp import web

from ..service.http import ApiError, endpoint
from ..service.inputs import path_ids
from . import lists, sql


def _task_ids(request: web.Request) -> tuple[str, ...]:
    raw = request.query.get("taskId", "")
    ids = tuple(part for part in raw.split(",") if part)
    if any(not (part.isascii() and part.isdigit() and len(part) < 19) for part in ids):
        raise ApiError(400, "taskId must be a comma-separated list of task ids")
    return ids


@endpoint
async def run_tasks(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    wanted = _task_ids(request)
    rows = sql.RUN_TASKS.get(ids.run)
    if wanted:
        rows = f"SELECT * FROM ({rows}) W WHERE W.task_id IN ({', '.join(wanted)})"
    return await lists.answer(request, rows, sql.TASK_FIELDS, ids.params, default_order="+ts_epoch")


@endpoint
async def step_tasks(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return await lists.answer(request, sql.STEP_TASKS.get(ids.run), sql.TASK_FIELDS, ids.params,
                              default_order="-attempt_id,+task_id")


@endpoint
async def attempts(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return await lists.answer(request, sql.ONE_TASK.get(ids.run, ids.task), sql.TASK_FIELDS, ids.params,
                              default_order="-attempt_id")
