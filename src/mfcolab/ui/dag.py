"""Route for a run's DAG: Metaflow's `_graph_info` artifact of the run's `_parameters` task,
unpickled by the locked-in worker (`values.py`) and passed on as it is. A run without one
(a client older than `_graph_info`) answers 404; the code-package fallback is not read."""

from __future__ import annotations

from aiohttp import web

from ..service.http import endpoint
from ..service.inputs import path_ids
from . import envelope, sql
from .artifacts import run_graph
from .context import context


@endpoint
async def run_dag(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    ctx = context(request)
    if await ctx.database.fetchval(sql.RUN_EXISTS.get(ids.run), *ids.params) is None:
        return envelope.missing(request, str(ids))
    shown = await run_graph(request, ids)
    if shown is None:
        return envelope.missing(request, f"the graph of {ids}")
    if not shown.ok or shown.content is None:
        return envelope.missing(request, f"a readable graph of {ids} ({shown.detail})")
    return envelope.single(request, shown.content)
