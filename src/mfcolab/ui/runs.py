"""Routes for runs: the home page list (all flows or one), one run, its parameters."""

from __future__ import annotations

import json

from aiohttp import web

from ..service.http import endpoint
from ..service.inputs import path_ids, path_text
from . import envelope, lists, sql
from .artifacts import run_parameter_values
from .context import context


@endpoint
async def all_runs(request: web.Request) -> web.Response:
    return await lists.answer(request, sql.ALL_RUNS, sql.RUN_FIELDS, (), default_order="-ts_epoch")


@endpoint
async def flow_runs(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    return await lists.answer(request, sql.FLOW_RUNS, sql.RUN_FIELDS, (flow_id,), default_order="-ts_epoch")


@endpoint
async def one_run(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    text = await context(request).database.fetchval(sql.single(sql.ONE_RUN.get(ids.run)), *ids.params)
    return envelope.missing(request, str(ids)) if text is None else envelope.single(request, text)


@endpoint
async def parameters(request: web.Request) -> web.Response:
    """`{"<name>": {"value": "<text>"}}`; a value that cannot be shown has its reason as text."""
    ids = path_ids(request.match_info)
    ctx = context(request)
    if await ctx.database.fetchval(sql.RUN_EXISTS.get(ids.run), *ids.params) is None:
        return envelope.missing(request, str(ids))
    named = await run_parameter_values(request, ids)
    data = {name: {"value": value.content if value.ok else f"({value.error_id}: {value.detail})"}
            for name, value in named}
    return envelope.single(request, json.dumps(data))
