"""Status changes no row announces: a run whose runtime died, a task whose heartbeat stopped.

Heartbeats update rows without notifying, so each running run and task that a change names is
watched by one timer, set for the moment its heartbeat would count as lost (`sql.RUN_LOST_S`
after the last beat, plus a second). When it fires, the object is reloaded with the HTTP
route's statement: still running, the timer is set again from the newer heartbeat; no longer
running, an UPDATE is published and the watch ends. A run found dead checks its watched tasks
at once. There is no periodic scan: a quiet database costs nothing, a running object one small
query per heartbeat period at most.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import asyncpg

from ..service.database import Database
from ..service.http import ApiError
from ..service.inputs import Key
from . import sql
from .live import Change

log = logging.getLogger(__name__)

MARGIN_SECONDS = 1.0  # heartbeats are whole seconds; check just after the threshold passed
RECHECK_SECONDS = float(sql.RUN_LOST_S)  # an object with no heartbeat yet
STARTUP_TRIES = 60

_ONE_RUN = sql.single(sql.ONE_RUN.get(Key(True, 0)))
_LATEST_ATTEMPT = (f"SELECT row_to_json(T)::text FROM ({sql.ONE_TASK.get(Key(True, 0), Key(True, 0))}) T"
                   " ORDER BY T.attempt_id DESC LIMIT 1")
_RUNNING_RUNS = f"""SELECT r.flow_id, r.run_number FROM runs_v3 r
WHERE r.last_heartbeat_ts > extract(epoch FROM now())::bigint - {sql.RUN_LOST_S}"""

# The pool is not open yet (ApiError 503), or Postgres is restarting: look again later.
DATABASE_AWAY = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ApiError)

WatchKey = tuple[str, int, str | None, int | None]


class Liveness:
    def __init__(self, database: Database, publish: Any) -> None:
        self.database = database
        self.publish = publish
        self.timers: dict[WatchKey, asyncio.TimerHandle] = {}
        self.running: set[WatchKey] = set()  # last seen running: a later failure is news
        self._checks: set[asyncio.Task[None]] = set()

    def saw(self, change: Change) -> None:
        """Watch the run and the task a change names (no-op when already watched). Announced
        ends need no timer: a watched object's next check finds it ended and drops it."""
        if change.kind in ("run", "task"):
            self._arm((change.flow_id, change.run_number, None, None), 0.0)
        if change.kind == "task" and change.step_name is not None and change.task_id is not None:
            self._arm((change.flow_id, change.run_number, change.step_name, change.task_id), 0.0)

    async def watch_running_runs(self) -> None:
        """Watch every run whose heartbeat is fresh (at start and after a reconnect). At start
        the pool it shares may open after this; it tries for STARTUP_TRIES seconds."""
        for _ in range(STARTUP_TRIES):
            try:
                records = await self.database.pool.fetch(_RUNNING_RUNS)
            except DATABASE_AWAY:
                await asyncio.sleep(1.0)
                continue
            for record in records:
                self._arm((record["flow_id"], record["run_number"], None, None), 0.0)
            return
        log.warning("live updates: cannot list the running runs; they are watched from their next change")

    def close(self) -> None:
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        for task in self._checks:
            task.cancel()

    def _arm(self, key: WatchKey, delay: float) -> None:
        if key in self.timers:
            return
        loop = asyncio.get_running_loop()
        self.timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: WatchKey) -> None:
        task = asyncio.get_running_loop().create_task(self._check(key))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check(self, key: WatchKey) -> None:
        self.timers.pop(key, None)
        flow_id, run_number, step_name, task_id = key
        try:
            if step_name is None:
                text = await self.database.fetchval(_ONE_RUN, flow_id, run_number)
            else:
                text = await self.database.fetchval(_LATEST_ATTEMPT, flow_id, run_number, step_name, task_id)
        except DATABASE_AWAY:
            log.warning("live updates: cannot check %s; again in %.0f s", key, RECHECK_SECONDS)
            self._arm(key, RECHECK_SECONDS)
            return
        if text is None:
            return
        row = json.loads(text)
        if row["status"] in ("running", "pending"):
            self.running.add(key)
            self._arm(key, self._delay(row.get("last_heartbeat_ts")))
        elif key in self.running:
            self.running.discard(key)
            if row["status"] == "failed":  # a verdict row announces every other end itself
                self._failed(key, row)

    def _failed(self, key: WatchKey, row: dict[str, Any]) -> None:
        flow_id, run_number, step_name, task_id = key
        if step_name is None:
            self.publish(Change("run", "UPDATE", flow_id, run_number), watch=False)
            for other in [k for k in self.timers if k[:2] == key[:2] and k[2] is not None]:
                self.timers.pop(other).cancel()
                self._fire(other)
        else:
            self.publish(Change("task", "UPDATE", flow_id, run_number, step_name, task_id, row.get("attempt_id")),
                         watch=False)

    @staticmethod
    def _delay(last_heartbeat: int | None) -> float:
        if last_heartbeat is None:
            return RECHECK_SECONDS
        return max(MARGIN_SECONDS, last_heartbeat + sql.RUN_LOST_S + MARGIN_SECONDS - time.time())
