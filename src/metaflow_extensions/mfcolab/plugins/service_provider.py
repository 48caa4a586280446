"""Metaflow's `service` metadata provider, with heartbeats from a thread instead of a sidecar.

The class replaces the stock `service` provider under the same name (`TYPE = "service"`), so
`--metadata service`, the Client API and `get_metadata()` are unchanged, and it inherits every
request that records or reads anything. It differs in three places, and only when the mfcolab
profile switched the extension on:

- starting a heartbeat starts a `HeartbeatThread` where the stock provider would ask the
  service for its version and spawn a sidecar process;
- the runtime's heartbeat starts sending its tasks' output to the service while they run, for
  the UI (`live_logs.py`);
- a step it has already seen or created is not fetched again before each new task of that step
  (the stock runtime GETs the step once per task, in its critical path; steps are never deleted
  and the answer is not used).

When the stock provider's heartbeat internals are not the ones this was written against (a
newer Metaflow changed them), it says so in one line and uses the stock sidecar.
"""

# Metaflow itself is untyped: calls into it are checked by the tests, not by mypy.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import functools
import inspect
from typing import Any

from metaflow.exception import MetaflowInternalError
from metaflow.metaflow_config import SERVICE_HEADERS, SERVICE_URL
from metaflow.plugins.metadata_providers import service as stock

from . import live_logs
from .heartbeat_thread import HeartbeatThread
from .switch import switched_on, warn_once

# The stock method this class takes over; a different signature means the internals moved.
_EXPECTED_PARAMETERS = ["self", "heartbeat_type", "flow_id", "run_id", "step_name", "task_id"]
_GET_OR_CREATE_PARAMETERS = ["self", "obj_type", "run_id", "step_name", "task_id", "tags", "sys_tags"]


class ServiceMetadataProvider(stock.ServiceMetadataProvider):
    TYPE = "service"

    def _start_heartbeat(self, heartbeat_type: Any, flow_id: str, run_id: str,
                         step_name: str | None = None, task_id: str | None = None) -> None:
        if not switched_on():
            super()._start_heartbeat(heartbeat_type, flow_id, run_id, step_name, task_id)
            return
        problem = internals_problem(self)
        if problem is not None:
            warn_once(f"in-process heartbeats are off ({problem}); Metaflow's heartbeat sidecar is used instead")
            super()._start_heartbeat(heartbeat_type, flow_id, run_id, step_name, task_id)
            return
        if self._already_started():
            raise MetaflowInternalError("heartbeat already started")
        self.sidecar = HeartbeatThread(heartbeat_url(self, heartbeat_type, flow_id, run_id, step_name, task_id),
                                       SERVICE_HEADERS)
        self.sidecar.start()
        if heartbeat_type == stock.HeartbeatTypes.RUN:
            live_logs.start(SERVICE_URL, SERVICE_HEADERS, warn_once)

    def _get_or_create(self, obj_type: str, run_id: Any = None, step_name: Any = None, task_id: Any = None,
                       tags: Any = None, sys_tags: Any = None) -> Any:
        if obj_type != "step" or not switched_on() or not _steps_cacheable():
            return super()._get_or_create(obj_type, run_id, step_name, task_id, tags, sys_tags)
        known = self.__dict__.setdefault("_mfcolab_known_steps", {})
        key = (self._flow_name, run_id, step_name)
        if key not in known:
            step, _ = super()._get_or_create(obj_type, run_id, step_name, task_id, tags, sys_tags)
            known[key] = step
        return known[key], False

    def stop_heartbeat(self) -> None:
        live_logs.stop()
        if isinstance(self.sidecar, HeartbeatThread):
            self.sidecar.terminate()
        else:
            super().stop_heartbeat()


@functools.cache
def _steps_cacheable() -> bool:
    try:
        parameters = list(inspect.signature(stock.ServiceMetadataProvider._get_or_create).parameters)
    except (AttributeError, TypeError, ValueError):
        return False
    return parameters == _GET_OR_CREATE_PARAMETERS


def heartbeat_url(provider: Any, heartbeat_type: Any, flow_id: str, run_id: str,
                  step_name: str | None, task_id: str | None) -> str:
    """The URL the stock sidecar would beat to, from the stock provider's own templates."""
    if heartbeat_type == stock.HeartbeatTypes.TASK:
        return str(provider.url_task_template.format(flow_id=flow_id, run_number=run_id,
                                                     step_name=step_name, task_id=task_id))
    if heartbeat_type == stock.HeartbeatTypes.RUN:
        return str(provider.url_run_template.format(flow_id=flow_id, run_number=run_id))
    raise MetaflowInternalError(f"invalid heartbeat type {heartbeat_type!r}")


def internals_problem(provider: Any) -> str | None:
    """What differs from the Metaflow internals this class relies on, or None when all is as known."""
    base = stock.ServiceMetadataProvider
    try:
        parameters = list(inspect.signature(base._start_heartbeat).parameters)
    except (AttributeError, TypeError, ValueError):
        return "ServiceMetadataProvider._start_heartbeat is gone"
    if parameters != _EXPECTED_PARAMETERS:
        return f"ServiceMetadataProvider._start_heartbeat takes ({', '.join(parameters)})"
    kinds = getattr(stock, "HeartbeatTypes", None)
    if kinds is None or not hasattr(kinds, "TASK") or not hasattr(kinds, "RUN"):
        return "HeartbeatTypes.TASK/RUN are gone"
    for name, fields in (("url_task_template", ("{flow_id}", "{run_number}", "{step_name}", "{task_id}")),
                         ("url_run_template", ("{flow_id}", "{run_number}"))):
        template = getattr(provider, name, None)
        if not isinstance(template, str) or not all(field in template for field in fields):
            return f"the provider has no {name} with {', '.join(fields)}"
    if not hasattr(provider, "sidecar") or not callable(getattr(base, "_already_started", None)):
        return "the provider keeps its heartbeat elsewhere than in .sidecar"
    return None
