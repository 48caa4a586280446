"""Metaflow's `service` metadata provider, with heartbeats from a thread instead of a sidecar.

The class replaces the stock `service` provider under the same name (`TYPE = "service"`), so
`--metadata service`, the Client API and `get_metadata()` are unchanged, and it inherits every
request that records or reads anything. It differs in one place, and only when the mfcolab
profile switched the extension on: starting a heartbeat starts a `HeartbeatThread` where the
stock provider would ask the service for its version and spawn a sidecar process.

When the stock provider's heartbeat internals are not the ones this was written against (a
newer Metaflow changed them), it says so in one line and uses the stock sidecar.
"""

from __future__ import annotations

import inspect
from typing import Any

from metaflow.exception import MetaflowInternalError
from metaflow.metaflow_config import SERVICE_HEADERS
from metaflow.plugins.metadata_providers import service as stock

from .heartbeat_thread import HeartbeatThread
from .switch import switched_on, warn_once

# The stock method this class takes over; a different signature means the internals moved.
_EXPECTED_PARAMETERS = ["self", "heartbeat_type", "flow_id", "run_id", "step_name", "task_id"]


class ServiceMetadataProvider(stock.ServiceMetadataProvider):  # type: ignore[misc]
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

    def stop_heartbeat(self) -> None:
        if isinstance(self.sidecar, HeartbeatThread):
            self.sidecar.terminate()
        else:
            super().stop_heartbeat()


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
