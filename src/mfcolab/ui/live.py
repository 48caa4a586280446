"""Live updates: what changed, which subscriptions it concerns, and the object each one gets.

A `Change` names one object (a run, a step, a task attempt, a metadata row) by its keys. The
`Hub` keeps the open sockets' subscriptions. For each change it finds the subscriptions whose
resource path holds that object, reloads the object with the statement of that path's HTTP
route (`sql.py`), the subscription's own filters in the WHERE clause, and queues one event per
subscription: `{type, uuid, resource, data}`. An object the filters exclude sends nothing.

Changes are kept for REPLAY_SECONDS (and at most REPLAY_MAX of them): a SUBSCRIBE with `since`
gets the current state of every object of its resource that changed since then, once each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..service.database import Database
from ..service.http import ApiError
from ..service.inputs import PathIds, path_ids
from ..service.sql import Keyed
from . import sql
from .query import Columns, ListQuery

log = logging.getLogger(__name__)

REPLAY_SECONDS = 600  # the UI replays after up to 5 minutes offline; twice that is kept
REPLAY_MAX = 100_000
RESOURCE_MAX = 2000  # characters of a subscription's resource


@dataclass(frozen=True)
class Change:
    """One object that was created or changed. `kind`: run | step | task | metadata."""

    kind: str
    operation: str  # INSERT | UPDATE
    flow_id: str
    run_number: int
    step_name: str | None = None
    task_id: int | None = None
    attempt_id: int | None = None  # a task change: this attempt only (else every attempt)
    metadata_id: int | None = None
    field_name: str | None = None  # a metadata change before its row id is looked up

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.flow_id, self.run_number, self.step_name, self.task_id, self.attempt_id,
                self.metadata_id)


@dataclass(frozen=True)
class LiveResource:
    """A resource path the UI subscribes to, with the statement and columns of its HTTP route."""

    pattern: re.Pattern[str]
    kind: str
    rows: Keyed | str
    columns: Columns


_F = r"/flows/(?P<flow_id>[^/]+)"
_R = _F + r"/runs/(?P<run_number>[^/]+)"
_T = _R + r"/steps/(?P<step_name>[^/]+)/tasks/(?P<task_id>[^/]+)"

RESOURCES = (
    LiveResource(re.compile(r"/runs"), "run", sql.ALL_RUNS, sql.RUN_FIELDS),
    LiveResource(re.compile(_F + r"/runs"), "run", sql.FLOW_RUNS, sql.RUN_FIELDS),
    LiveResource(re.compile(_R), "run", sql.ONE_RUN, sql.RUN_FIELDS),
    LiveResource(re.compile(_R + r"/steps"), "step", sql.STEP_ROWS, sql.STEP_FIELDS),
    LiveResource(re.compile(_R + r"/tasks"), "task", sql.RUN_TASKS, sql.TASK_FIELDS),
    LiveResource(re.compile(_R + r"/steps/(?P<step_name>[^/]+)/tasks"), "task", sql.STEP_TASKS, sql.TASK_FIELDS),
    LiveResource(re.compile(_T + r"/attempts"), "task", sql.ONE_TASK, sql.TASK_FIELDS),
    LiveResource(re.compile(_R + r"/metadata"), "metadata", sql.RUN_METADATA, sql.METADATA_FIELDS),
    LiveResource(re.compile(_T + r"/metadata"), "metadata", sql.TASK_METADATA, sql.METADATA_FIELDS),
)

# Paths the UI subscribes to that get no events here (no trigger announces their rows).
QUIET = re.compile(r"/flows/[^/]+/runs/[^/]+(/steps/[^/]+/tasks/[^/]+)?/(parameters|artifacts|dag|cards)")

# The key columns that narrow a resource's rows to the object of a change.
_KEY_COLUMNS = {
    "run": ("flow_id", "run_number"),
    "step": ("flow_id", "run_number", "step_name"),
    "task": ("flow_id", "run_number", "step_name", "task_id", "attempt_id"),
    "metadata": ("flow_id", "run_number", "step_name", "task_id", "id"),
}


def _key_values(change: Change) -> tuple[Any, ...]:
    values = {"flow_id": change.flow_id, "run_number": change.run_number, "step_name": change.step_name,
              "task_id": change.task_id, "attempt_id": change.attempt_id, "id": change.metadata_id}
    return tuple(values[name] for name in _KEY_COLUMNS[change.kind])


@dataclass(frozen=True)
class Subscription:
    uuid: str
    path: str  # the resource without its query (named in events, as upstream names it)
    live: LiveResource | None
    ids: PathIds | None
    query: Mapping[str, str]

    @classmethod
    def parse(cls, uuid: str, resource: str) -> Subscription:
        """A subscription, or an ApiError naming what is wrong with `resource`."""
        if not resource.startswith("/") or len(resource) > RESOURCE_MAX:
            raise ApiError(400, f"resource must be a path starting with / (at most {RESOURCE_MAX} characters)")
        parts = urlsplit(resource)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        for live in RESOURCES:
            match = live.pattern.fullmatch(path)
            if match:
                groups = {name: unquote(value) for name, value in match.groupdict().items()}
                subscription = cls(uuid, path, live, path_ids(groups) if groups else None, query)
                subscription.filters(1)  # a bad filter is refused now, not at the first event
                return subscription
        if QUIET.fullmatch(path):
            return cls(uuid, path, None, None, query)
        raise ApiError(400, f"no live resource at {path}")

    def filters(self, first: int) -> ListQuery:
        live = self._resource()
        return ListQuery.parse(self.query, live.columns, first, default_order="-" + live.columns.key[0])

    def _resource(self) -> LiveResource:
        if self.live is None:
            raise ApiError(400, f"{self.path} is not a live list: it has no rows to filter")
        return self.live

    def may_hold(self, change: Change) -> bool:
        """False when the path alone rules the object out (saves a query); True may still be no."""
        if self.live is None or self.live.kind != change.kind:
            return False
        ids = self.ids
        if ids is None:
            return True
        if ids.flow_id != change.flow_id:
            return False
        if ids.run is not None and ids.run.numeric and ids.run.value != change.run_number:
            return False
        if ids.step_name is not None and change.step_name is not None and ids.step_name != change.step_name:
            return False
        return not (ids.task is not None and ids.task.numeric and ids.task.value != change.task_id)

    def statement(self, change: Change) -> tuple[str, tuple[Any, ...]]:
        """The route's rows narrowed by this subscription's filters and the change's keys."""
        ids = self.ids
        params = ids.params if ids is not None else ()
        rows = self._resource().rows
        if isinstance(rows, Keyed):
            if ids is None:
                raise ApiError(400, f"{self.path} names no run")
            rows = rows.get(ids.run, ids.task)
        query = self.filters(len(params) + 1)
        where = list(query.where)
        for column, value in zip(_KEY_COLUMNS[change.kind], _key_values(change), strict=True):
            if value is not None:
                where.append(f'T."{column}" = {query.bind(value)}')
        text = (f"SELECT coalesce(json_agg(T ORDER BY {query.order}), '[]'::json)::text FROM ({rows}) T"
                f" WHERE {' AND '.join(where)}")
        return text, (*params, *query.params)


_METADATA_ROW = """SELECT max(m.id) FROM metadata_v3 m WHERE m.flow_id = $1 AND m.run_number = $2
  AND m.step_name = $3 AND m.task_id = $4 AND m.field_name = $5"""

Send = Callable[[dict[str, Any]], None]


@dataclass(eq=False)
class Listener:
    """One socket's subscriptions and the function that queues a frame on it."""

    send: Send
    subscriptions: dict[str, Subscription] = field(default_factory=dict)


class Hub:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.listeners: set[Listener] = set()
        self.recent: deque[tuple[float, Change]] = deque(maxlen=REPLAY_MAX)
        self._changes: asyncio.Queue[tuple[Change, bool]] = asyncio.Queue()
        self._watchers: list[Callable[[Change], None]] = []

    def watch(self, callback: Callable[[Change], None]) -> None:
        """Call `callback` with every change published (the heartbeat timers)."""
        self._watchers.append(callback)

    def publish(self, change: Change, watch: bool = True) -> None:
        """Queue a change for dispatch; `watch=False` keeps it from the watchers (their own)."""
        self._changes.put_nowait((change, watch))

    async def run(self) -> None:
        """Dispatch changes in the order they were published, for ever."""
        while True:
            change, watch = await self._changes.get()
            try:
                change = await self._with_row_id(change)
            except Exception:  # the database is away; the change is dropped
                log.exception("live update for %s failed", change)
                continue
            now = time.time()
            self.recent.append((now, change))
            while self.recent[0][0] < now - REPLAY_SECONDS:
                self.recent.popleft()
            for callback in self._watchers if watch else ():
                callback(change)
            try:
                await self._dispatch(change)
            except Exception:  # one bad change must not stop live updates
                log.exception("live update for %s failed", change)

    async def _with_row_id(self, change: Change) -> Change:
        """A metadata change names its row (the trigger sends no id): the newest of its field."""
        if change.kind != "metadata" or change.metadata_id is not None:
            return change
        row_id = await self.database.fetchval(_METADATA_ROW, change.flow_id, change.run_number, change.step_name,
                                              change.task_id, change.field_name)
        return dataclasses.replace(change, metadata_id=row_id or 0, field_name=None)

    async def _dispatch(self, change: Change) -> None:
        loaded: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for listener in list(self.listeners):
            for subscription in list(listener.subscriptions.values()):
                if not subscription.may_hold(change):
                    continue
                cache_key = (subscription.path, json.dumps(subscription.query, sort_keys=True))
                if cache_key not in loaded:
                    loaded[cache_key] = await self.load(subscription, change)
                for data in loaded[cache_key]:
                    listener.send(event(change.operation, subscription, data))

    async def load(self, subscription: Subscription, change: Change) -> list[dict[str, Any]]:
        text, params = subscription.statement(change)
        rows: list[dict[str, Any]] = json.loads(await self.database.fetchval(text, *params))
        return rows

    async def replay(self, listener: Listener, subscription: Subscription, since: float) -> None:
        """The current state of each object of `subscription` that changed at or after `since`."""
        latest: dict[tuple[Any, ...], Change] = {}
        for at, change in list(self.recent):
            if at >= since and subscription.may_hold(change):
                latest.pop(change.key, None)
                latest[change.key] = change
        for change in latest.values():
            for data in await self.load(subscription, change):
                listener.send(event(change.operation, subscription, data))


def event(operation: str, subscription: Subscription, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": operation, "uuid": subscription.uuid, "resource": subscription.path, "data": data}
