"""The source of live updates: `LISTEN notify` on one dedicated Postgres connection.

The triggers of `sql/002_notify_triggers.sql` send the keys of each new row (runs, steps,
tasks; metadata `attempt`, `attempt_ok`, `code-package*`) on `notify`; those of
`sql/003_live_triggers.sql` the other ends of attempts (`attempt-done`, `_task_ok`) on
`mfcolab_live`. `changes_of` turns one payload into
the `Change`s it implies: a new task also changes its run (its status may move), an `attempt`
row starts a task attempt, an `attempt_ok` row ends one and may end the run; `attempt-done` and `_task_ok` end one.

`NotifyConnection.run` connects, listens, checks the connection every KEEPALIVE_SECONDS and
reconnects on its own (1 s, growing to 10 s between tries) when Postgres restarts or the
backend is killed. Notifications sent while it was away are lost; a reconnect calls
`on_connect`, which re-arms the heartbeat timers of the runs still running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from .live import Change

log = logging.getLogger(__name__)

CHANNELS = ("notify", "mfcolab_live")  # the UI triggers (002), the attempt ends they leave out (003)
KEEPALIVE_SECONDS = 5.0
RETRY_FIRST, RETRY_MAX = 1.0, 10.0
_ATTEMPT_TAG = re.compile(r"attempt_id:(\d{1,4})")


def changes_of(payload: str) -> list[Change]:
    """The changes one trigger payload announces; [] for anything malformed or irrelevant."""
    try:
        message = json.loads(payload)
        table, data = message["table"], message["data"]
        if message.get("operation") not in ("INSERT", "UPDATE"):
            return []
        flow_id, run_number = str(data["flow_id"]), int(data["run_number"])
    except (ValueError, KeyError, TypeError):
        return []
    run = Change("run", "UPDATE", flow_id, run_number)
    if table == "runs_v3":
        return [Change("run", "INSERT", flow_id, run_number)]
    if table == "steps_v3":
        return [Change("step", message["operation"], flow_id, run_number, str(data["step_name"]))]
    if table == "tasks_v3":
        return [Change("task", "INSERT", flow_id, run_number, str(data["step_name"]), int(data["task_id"])), run]
    if table == "metadata_v3":
        return _metadata_changes(data, flow_id, run_number)
    if table == "artifact_v3":  # a _task_ok artifact: the attempt's end mark
        step_name, task_id = str(data["step_name"]), int(data["task_id"])
        return [Change("task", "UPDATE", flow_id, run_number, step_name, task_id, int(data["attempt_id"])),
                Change("step", "UPDATE", flow_id, run_number, step_name)]
    return []


def _metadata_changes(data: dict[str, Any], flow_id: str, run_number: int) -> list[Change]:
    step_name, task_id, field_name = str(data["step_name"]), int(data["task_id"]), data["field_name"]
    metadata = Change("metadata", "INSERT", flow_id, run_number, step_name, task_id, field_name=str(field_name))
    if field_name == "attempt":
        attempt = _number(str(data.get("value", "")).strip('"'))
        operation = "INSERT" if attempt else "UPDATE"
        task = Change("task", operation, flow_id, run_number, step_name, task_id, attempt)
        return [metadata, task, Change("step", "UPDATE", flow_id, run_number, step_name)]
    if field_name == "attempt-done":
        task = Change("task", "UPDATE", flow_id, run_number, step_name, task_id, _attempt_of_tags(data))
        return [metadata, task, Change("step", "UPDATE", flow_id, run_number, step_name)]
    if field_name == "attempt_ok":
        task = Change("task", "UPDATE", flow_id, run_number, step_name, task_id, _attempt_of_tags(data))
        return [metadata, task, Change("step", "UPDATE", flow_id, run_number, step_name),
                Change("run", "UPDATE", flow_id, run_number)]
    return [metadata]


def _attempt_of_tags(data: dict[str, Any]) -> int | None:
    found = _ATTEMPT_TAG.search(json.dumps(data.get("tags")))
    return int(found.group(1)) if found else None


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 5 else None


class NotifyConnection:
    def __init__(self, dsn: str, publish: Callable[[Change], None],
                 on_connect: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.dsn = dsn
        self.publish = publish
        self.on_connect = on_connect
        self.connected = asyncio.Event()

    async def run(self) -> None:
        pause = RETRY_FIRST
        while True:
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("live updates: lost the Postgres connection (%s); reconnecting in %.0f s", exc, pause)
            if self.connected.is_set():  # it had connected: start again from the short pause
                pause = RETRY_FIRST
            self.connected.clear()
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self.dsn, timeout=10,
                                           server_settings={"application_name": "mfcolab-ui-live"})
        try:
            for channel in CHANNELS:
                await connection.add_listener(channel, self._received)
            self.connected.set()
            catching_up: asyncio.Task[None] = asyncio.create_task(self.on_connect())
            try:
                await self._keep_alive(connection)
            finally:
                catching_up.cancel()
        finally:
            connection.terminate()

    @staticmethod
    async def _keep_alive(connection: Any) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            await connection.fetchval("SELECT 1", timeout=KEEPALIVE_SECONDS)

    def _received(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        for change in changes_of(payload):
            self.publish(change)
