"""Routes for runs: the home page list (all flows or one), one run, its parameters."""

from __future__ import annotations

import json

from aiohttp import web

from ..service.http import endpoint
from ..service.inputs import path_ids, path_text
from . import envelope, lists, sql
from .artifacts import parameter_blobs
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


# Artifacts of the _parameters task that are not parameters.
NOT_PARAMETERS = ("name", "script_name")


@endpoint
async def parameters(request: web.Request) -> web.Response:
    """`{"<name>": {"value": "<text>"}}`; a value that cannot be shown has its reason as text."""
    ids = path_ids(request.match_info)
    ctx = context(request)
    if await ctx.database.fetchval(sql.RUN_EXISTS.get(ids.run), *ids.params) is None:
        return envelope.missing(request, str(ids))
    named = [(name, blob) for name, blob in await parameter_blobs(request, ids)
             if not name.startswith("_") and name not in NOT_PARAMETERS]
    shown = await ctx.values.show([blob for _, blob in named])
    data = {name: {"value": value.content if value.ok else f"({value.error_id}: {value.detail})"}
            for (name, _), value in zip(named, shown, strict=True)}
    return envelope.single(request, json.dumps(data))
