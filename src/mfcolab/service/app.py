"""The aiohttp application of the native metadata service: routes and lifecycle."""

from __future__ import annotations

from aiohttp import web

from . import admin, artifacts, flows, livelogs, metadata, runs, steps, tags, tasks
from .database import DB_KEY, Database
from .http import CONNECTION_LOST, json_bodies_only
from .routing import ShapeRouter

MAX_BODY_BYTES = 64 * 1024 * 1024

_RUN = "/flows/{flow_id}/runs/{run_number}"
_STEP = _RUN + "/steps/{step_name}"
_TASK = _STEP + "/tasks/{task_id}"

ROUTES = [
    ("GET", "/ping", admin.ping),
    ("GET", "/version", admin.version),
    ("GET", "/healthcheck", admin.healthcheck),
    ("GET", "/flows", flows.list_flows),
    ("GET", "/flows/{flow_id}", flows.get_flow),
    ("POST", "/flows/{flow_id}", flows.create_flow),
    ("POST", "/flows/{flow_id}/run", runs.create_run),
    ("GET", "/flows/{flow_id}/runs", runs.list_runs),
    ("GET", _RUN, runs.get_run),
    ("POST", _RUN + "/heartbeat", runs.run_heartbeat),
    ("PATCH", _RUN + "/tag/mutate", tags.mutate_run_tags),
    ("GET", _RUN + "/metadata", metadata.run_metadata),
    ("GET", _RUN + "/artifacts", artifacts.run_artifacts),
    ("GET", _RUN + "/steps", steps.list_steps),
    ("GET", _STEP, steps.get_step),
    ("POST", _STEP + "/step", steps.create_step),
    ("GET", _STEP + "/tasks", tasks.list_tasks),
    ("GET", _STEP + "/filtered_tasks", tasks.filtered_tasks),
    ("POST", _STEP + "/task", tasks.create_task),
    ("GET", _STEP + "/artifacts", artifacts.step_artifacts),
    ("GET", _TASK, tasks.get_task),
    ("POST", _TASK + "/heartbeat", tasks.task_heartbeat),
    ("GET", _TASK + "/metadata", metadata.task_metadata),
    ("POST", _TASK + "/metadata", metadata.create_metadata),
    ("POST", _TASK + "/logs/{stream}", livelogs.append_log),
    ("DELETE", _TASK + "/logs/{stream}", livelogs.drop_log),
    ("POST", _TASK + "/artifact", artifacts.create_artifacts),
    ("GET", _TASK + "/artifacts", artifacts.task_artifacts),
    ("GET", _TASK + "/attempt/{attempt_id}/artifacts", artifacts.task_attempt_artifacts),
    ("GET", _TASK + "/artifacts/{artifact_name}", artifacts.get_artifact),
    ("GET", _TASK + "/artifacts/{artifact_name}/attempt/{attempt_id}", artifacts.get_artifact_attempt),
]


def create_app(dsn: str, *, pool_min: int = 2, pool_max: int = 10) -> web.Application:
    """The metadata service with its routes at the root (/ping, /flows/...). The asyncpg pool
    opens when the application (or the application it is mounted in) starts, and closes
    when it stops."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_bodies_only])
    database = Database(dsn, pool_min, pool_max)
    app[DB_KEY] = database
    app[CONNECTION_LOST] = database.connection_lost
    app[livelogs.SPOOL_KEY] = livelogs.LogSpool()
    app.cleanup_ctx.append(database.lifespan)
    flows_routes = ShapeRouter()
    for method, path, handler in ROUTES:
        if path.startswith("/flows/"):
            flows_routes.add(method, path, handler)
        else:
            app.router.add_route(method, path, handler)
    app.router.add_route("*", "/flows/{tail:.+}", flows_routes.handler())
    app.router.add_route("*", "/{tail:.*}", admin.no_route)
    return app
