"""The aiohttp application of the UI API: its route table and its lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..service.database import Database
from ..service.http import CONNECTION_LOST
from ..service.livelogs import LogSpool
from ..settings import Settings
from . import (
    admin,
    artifacts,
    autocomplete,
    cards,
    dag,
    logs,
    metadata,
    runs,
    search,
    steps,
    tasks,
)
from .context import CONTEXT_KEY, Context
from .datastore import DatastoreRoots
from .values import ValueReader
from .websocket import LIVE_KEY, LiveUpdates, websocket

_RUN = "/flows/{flow_id}/runs/{run_number}"
_TASK = _RUN + "/steps/{step_name}/tasks/{task_id}"

# Autocomplete routes come before the routes whose value segment they would match.
ROUTES = [
    ("GET", "/features", admin.features),
    ("GET", "/plugin", admin.plugins),
    ("GET", "/links", admin.links),
    ("GET", "/notifications", admin.notifications),
    ("GET", "/version", admin.version),
    ("GET", "/flows/autocomplete", autocomplete.flows),
    ("GET", "/tags/autocomplete", autocomplete.tags),
    ("GET", "/flows/{flow_id}/runs/autocomplete", autocomplete.runs),
    ("GET", _RUN + "/steps/autocomplete", autocomplete.steps),
    ("GET", _RUN + "/artifacts/autocomplete", autocomplete.artifacts),
    ("GET", "/runs", runs.all_runs),
    ("GET", "/flows/{flow_id}/runs", runs.flow_runs),
    ("GET", _RUN, runs.one_run),
    ("GET", _RUN + "/parameters", runs.parameters),
    ("GET", _RUN + "/dag", dag.run_dag),
    ("GET", _RUN + "/steps", steps.run_steps),
    ("GET", _RUN + "/tasks", tasks.run_tasks),
    ("GET", _RUN + "/metadata", metadata.run_metadata),
    ("GET", _RUN + "/artifacts", artifacts.run_artifacts),
    ("GET", _RUN + "/steps/{step_name}/tasks", tasks.step_tasks),
    ("GET", _TASK + "/attempts", tasks.attempts),
    ("GET", _TASK + "/metadata", metadata.task_metadata),
    ("GET", _TASK + "/artifacts", artifacts.task_artifacts),
    ("GET", _TASK + "/logs/{stream}", logs.log_page),
    ("GET", _TASK + "/logs/{stream}/download", logs.log_download),
    ("GET", _TASK + "/cards", cards.card_list),
    ("GET", _TASK + "/cards/{card_hash}", cards.card_html),
    ("GET", _TASK + "/cards/{card_hash}/data", cards.card_data),
]


def create_app(settings: Settings, database: Database | str, spool: LogSpool | None = None) -> web.Application:
    """The UI API with its routes at the root (/runs, /flows/..., /ws); mount it at /api.

    `database` is the metadata service's `Database` to share its pool (its owner opens and
    closes it), or a DSN for a pool of the UI's own, opened and closed with this application.
    `spool` is the metadata service's spool of running tasks' logs (`service.livelogs`)."""
    app = web.Application()
    if isinstance(database, str):
        database = Database(database, 1, 8)
        app.cleanup_ctx.append(database.lifespan)
        app[CONNECTION_LOST] = database.connection_lost
    roots = DatastoreRoots(settings.datastore_dir)
    app[CONTEXT_KEY] = Context(settings, database, roots, ValueReader(roots),
                               spool if spool is not None else LogSpool())
    app.cleanup_ctx.append(_values_lifespan)
    app[LIVE_KEY] = LiveUpdates(database)
    app.cleanup_ctx.append(app[LIVE_KEY].lifespan)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/search" + _RUN, search.search)
    app.router.add_get(_RUN + "/search", search.search)
    app.router.add_route("*", "/{tail:[\\s\\S]*}", admin.no_route)  # any path, newlines included
    return app


async def _values_lifespan(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CONTEXT_KEY].values.close()
