"""Routes for artifacts: a run's and a task's lists, with values on `postprocess=true`.

A value is shown as `content` (its text, from the locked-in worker of `values.py`); one that
cannot be shown gets `postprocess_error: {id, detail}` instead, never a failed request.
Values are read only from the local datastore, where the row's location (`:root:<ds-root>`,
or the blob's own path) is mapped onto this machine by `datastore.py`.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from ..service.http import endpoint, json_text
from ..service.inputs import PathIds, path_ids
from . import lists, sql
from .context import context
from .query import flag
from .values import Blob, Shown


def blob_of(request: web.Request, flow_id: str, location: str, sha: str | None, ds_type: str) -> Blob | None:
    """Where the value of an artifact row is stored on this machine, or None."""
    if ds_type != "local" or not sha:
        return None
    if location.startswith(":root:"):
        recorded = location[len(":root:"):]
    else:
        path = PurePosixPath(location)
        tail = (flow_id, "data", sha[:2], sha)
        if path.parts[-4:] != tail:
            return None
        recorded = str(PurePosixPath(*path.parts[:-4]))
    return Blob(context(request).roots.local_root(recorded), flow_id, sha)


async def parameter_blobs(request: web.Request, ids: PathIds) -> list[tuple[str, Blob | None]]:
    """(name, blob) of every artifact of the run's `_parameters` task."""
    rows = await context(request).database.pool.fetch(sql.PARAMETER_ARTIFACTS.get(ids.run), *ids.params)
    seen: dict[str, Blob | None] = {}
    for row in rows:
        if row["name"] not in seen:
            seen[row["name"]] = blob_of(request, ids.flow_id, row["location"], row["sha"], row["ds_type"])
    return list(seen.items())


GRAPH_ARTIFACT = "_graph_info"
NOT_PARAMETERS = ("name", "script_name")  # artifacts of the _parameters task that are not parameters


async def _parameters_task(request: web.Request, ids: PathIds) -> tuple[Blob | None, list[tuple[str, Blob | None]]]:
    """The blobs of the run's graph and parameters, their values already loading in one worker
    (graph first): the run page asks for `/dag` and `/parameters` at once, and the second
    request waits for the worker the first one started."""
    blobs = await parameter_blobs(request, ids)
    graph = dict(blobs).get(GRAPH_ARTIFACT)
    named = [(name, blob) for name, blob in blobs if not name.startswith("_") and name not in NOT_PARAMETERS]
    context(request).values.prefetch(([(graph, "json")] if graph is not None else []) + [(blob, "text") for _, blob in named])
    return graph, named


async def run_graph(request: web.Request, ids: PathIds) -> Shown | None:
    """The run's `_graph_info` as JSON text; None when no such artifact is stored here."""
    graph, _ = await _parameters_task(request, ids)
    return None if graph is None else (await context(request).values.show_each([(graph, "json")]))[0]


async def run_parameter_values(request: web.Request, ids: PathIds) -> list[tuple[str, Shown]]:
    """(name, value as text) of each of the run's parameters."""
    _, named = await _parameters_task(request, ids)
    shown = await context(request).values.show_each([(blob, "text") for _, blob in named])
    return [(name, value) for (name, _), value in zip(named, shown, strict=True)]


def _error(shown: Shown) -> dict[str, Any]:
    return {"id": shown.error_id, "detail": shown.detail}


async def _with_content(request: web.Request, response: web.Response) -> web.Response:
    """The page's artifacts with `content` or `postprocess_error` added."""
    if response.status != 200 or not isinstance(response.body, bytes):
        return response
    doc = json.loads(response.body)
    rows = doc.get("data")
    if not isinstance(rows, list) or not rows:
        return response
    blobs = [blob_of(request, row["flow_id"], row["location"], row["sha"], row["ds_type"]) for row in rows]
    for row, shown in zip(rows, await context(request).values.show(blobs), strict=True):
        if shown.ok:
            row["content"] = shown.content
        else:
            row["postprocess_error"] = _error(shown)
    return json_text(json.dumps(doc))


@endpoint
async def run_artifacts(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    response = await lists.answer(request, sql.RUN_ARTIFACTS.get(ids.run), sql.ARTIFACT_FIELDS, ids.params,
                                  default_order="+step_name,+task_id,+name")
    return await _with_content(request, response) if flag(request.query, "postprocess") else response


@endpoint
async def task_artifacts(request: web.Request) -> web.Response:
    ids = path_ids(request.match_info)
    response = await lists.answer(request, sql.TASK_ARTIFACTS.get(ids.run, ids.task), sql.ARTIFACT_FIELDS,
                                  ids.params, default_order="-attempt_id,+name")
    return await _with_content(request, response) if flag(request.query, "postprocess") else response
