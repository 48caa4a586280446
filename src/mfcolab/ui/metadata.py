"""Routes for metadata: a run's (the UI asks for `step_name=start`) and a task's rows."""

from __future__ import annotations

from aiohttp import web

from ..service.http import endpoint
from ..service.inputs import path_ids
from . import lists, sql


@endpoint
async def run_metadata(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return await lists.answer(request, sql.RUN_METADATA.get(ids.run), sql.METADATA_FIELDS, ids.params,
                              default_order="-ts_epoch")


@endpoint
async def task_metadata(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return await lists.answer(request, sql.TASK_METADATA.get(ids.run, ids.task), sql.METADATA_FIELDS, ids.params,
                              default_order="-ts_epoch")
