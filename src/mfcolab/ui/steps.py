"""Routes for steps: a run's steps, for the timeline."""

from __future__ import annotations

from aiohttp import web

from ..service.http import endpoint
from ..service.inputs import path_ids
from . import lists, sql


@endpoint
async def run_steps(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return await lists.answer(request, sql.STEP_ROWS.get(ids.run), sql.STEP_FIELDS, ids.params,
                              default_order="+ts_epoch")
