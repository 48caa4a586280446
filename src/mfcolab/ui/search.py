"""`/search/flows/{f}/runs/{r}` (and the older `/flows/{f}/runs/{r}/search`): a run's tasks found
by an artifact's value or a foreach variable, over a WebSocket that closes after its answer.

Query: `key` (an artifact name, or a foreach variable), `value` (URL-decoded up to three times, as
the UI encodes it more than once; absent: every task that has the artifact), `scope`
(`ARTIFACT`, `FOREACH_VARIABLE` or both, comma-separated; default ARTIFACT).

- ARTIFACT: the run's artifacts named `key` (every attempt); each value is shown as text by the
  same bounded worker as the artifact routes (`values.py`) and compared, case-insensitively,
  whole when `value` is in double quotes, as a substring otherwise. Batches of values are
  followed by `{"event": {"type": "progress", "fraction": f}}`. A value that cannot be shown
  makes its task a match with `searchable: false` and the `error` {id, detail}.
- FOREACH_VARIABLE: tasks whose `foreach-stack` metadata contains `key=value` (or `key`).

Each scope ends with `{"event": {"type": "result", "matches": [...]}}`, the matches found so far
(one per step and task): `{flow_id, run_number, step_name, task_id, searchable, error?}`, where
`task_id` is the task's pathspec id as a string (its name, else its number), which is what the
UI compares with its rows. A bad
query gets `{"event": {"type": "error", "message", "id"}}` and the socket closes.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote_plus

import asyncpg
from aiohttp import web

from ..service.http import ApiError
from ..service.inputs import check_text, path_ids
from . import sql
from .artifacts import blob_of
from .context import context

log = logging.getLogger(__name__)

SCOPES = ("ARTIFACT", "FOREACH_VARIABLE")
BATCH = 25  # values shown between two progress events
TERM_MAX = 1000


class SearchQuery:
    def __init__(self, request: web.Request) -> None:
        self.ids = path_ids(request.match_info)
        key = request.query.get("key")
        if not key:
            raise ApiError(400, "key is required (?key=<artifact or foreach variable>)")
        self.key = check_text(key, "key")
        raw = request.query.get("value")
        self.value = check_text(_decoded(raw), "value", TERM_MAX) if raw else None
        scopes = [scope for scope in _decoded(request.query.get("scope", "ARTIFACT")).split(",") if scope]
        unknown = [scope for scope in scopes if scope not in SCOPES]
        if unknown or not scopes:
            raise ApiError(400, f"scope must be ARTIFACT, FOREACH_VARIABLE or both, not {','.join(unknown)[:80]!r}")
        self.scopes = scopes


def value_matches(term: str, text: str) -> bool:
    """Whether a value shown as `text` matches the search term: whole in quotes, else as a substring."""
    if len(term) >= 2 and term.startswith('"') and term.endswith('"'):
        return text.lower() == term[1:-1].lower()
    return term.lower() in text.lower()


def _decoded(value: str) -> str:
    for _ in range(3):
        value = unquote_plus(value)
    return value


def _match(row: Any, searchable: bool = True, error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"flow_id": row["flow_id"], "run_number": row["run_number"], "step_name": row["step_name"],
            "task_id": row["task_id"], "searchable": searchable, "error": error}


class Matches:
    """Matches so far, one per step and task."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, match: dict[str, Any]) -> None:
        self.found.setdefault((match["step_name"], match["task_id"]), match)

    def event(self) -> str:
        return json.dumps({"event": {"type": "result", "matches": list(self.found.values())}})


async def search(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    try:
        query = SearchQuery(request)
        matches = Matches()
        for scope in query.scopes:
            if scope == "ARTIFACT":
                await _search_artifacts(request, ws, query, matches)
            else:
                await _search_foreach(request, query, matches)
            await ws.send_str(matches.event())
    except ApiError as exc:
        await ws.send_str(_error(exc.message, "bad-search"))
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("search of %s failed: %s", request.path, exc)
        await ws.send_str(_error("the search failed; try again", "filter-tasks-failed"))
    except ConnectionResetError:
        pass  # the page went away
    await ws.close()
    return ws


def _error(message: str, error_id: str) -> str:
    return json.dumps({"event": {"type": "error", "message": message, "id": error_id}})


async def _search_artifacts(request: web.Request, ws: web.WebSocketResponse, query: SearchQuery,
                            matches: Matches) -> None:
    ids = query.ids
    rows = await context(request).database.pool.fetch(sql.SEARCH_ARTIFACTS.get(ids.run), *ids.params, query.key)
    term = query.value
    if term is None:
        for row in rows:
            matches.add(_match(row))
        return
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        blobs = [blob_of(request, row["flow_id"], row["location"], row["sha"], row["ds_type"]) for row in batch]
        for row, shown in zip(batch, await context(request).values.show(blobs), strict=True):
            if not shown.ok:
                matches.add(_match(row, False, {"id": shown.error_id, "detail": shown.detail}))
            elif shown.content is not None and value_matches(term, shown.content):
                matches.add(_match(row))
        fraction = min(start + BATCH, len(rows)) / len(rows)
        await ws.send_str(json.dumps({"event": {"type": "progress", "fraction": fraction}}))


async def _search_foreach(request: web.Request, query: SearchQuery, matches: Matches) -> None:
    ids = query.ids
    wanted = f"{query.key}={query.value}" if query.value else query.key
    rows = await context(request).database.pool.fetch(sql.SEARCH_FOREACH_STACKS.get(ids.run), *ids.params)
    for row in rows:
        if wanted in str(row["value"]):
            matches.add(_match(row))
