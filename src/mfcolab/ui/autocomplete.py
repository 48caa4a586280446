"""Autocomplete routes: distinct flow names, run ids, step names, artifact names and tags,
filtered with the list grammar (`flow_id:co=`, `run:co=`, `tag:re=`...)."""

from __future__ import annotations

from aiohttp import web

from ..service.http import endpoint
from ..service.inputs import path_ids, path_text
from . import lists, sql
from .query import Columns


def _columns(name: str) -> Columns:
    return Columns(kinds={name: "text"}, key=(), tags=False)


@endpoint
async def flows(request: web.Request) -> web.Response:
    return await lists.answer(request, sql.AUTOCOMPLETE_FLOWS, _columns("flow_id"), (), default_order="",
                              plain_values=True)


@endpoint
async def runs(request: web.Request) -> web.Response:
    flow_id = path_text(request.match_info, "flow_id")
    return await lists.answer(request, sql.AUTOCOMPLETE_RUNS, _columns("run"), (flow_id,), default_order="",
                              plain_values=True)


@endpoint
async def steps(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return await lists.answer(request, sql.AUTOCOMPLETE_STEPS.get(ids.run), _columns("step_name"), ids.params,
                              default_order="", plain_values=True)


@endpoint
async def artifacts(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    return await lists.answer(request, sql.AUTOCOMPLETE_ARTIFACTS.get(ids.run), _columns("name"), ids.params,
                              default_order="", plain_values=True)


@endpoint
async def tags(request: web.Request) -> web.Response:
    return await lists.answer(request, sql.AUTOCOMPLETE_TAGS, _columns("tag"), (), default_order="",
                              plain_values=True)
