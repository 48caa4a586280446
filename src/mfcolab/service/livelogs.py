"""Logs of running tasks: what the runtime has captured so far, kept in the web process's memory.

A local Metaflow runtime reads each task's stdout and stderr from pipes and writes them to the
datastore only when the task ends. With mfcolab's Metaflow extension on, the runtime also sends
the bytes it captured (the same mflog-stamped lines it will write at the end) to the service
every second, and the UI's log routes show them while the datastore holds no log yet
(`ui/logs.py`; the datastore's log always wins). Nothing here touches the datastore.

    POST   .../tasks/{task_id}/logs/{stream}?attempt=A&offset=N   body: the log's bytes from N on
           answers {"length": L}, the bytes of that log received so far; an `offset` past L
           is refused (409, with L) so that a client never leaves a hole; bytes before L are
           taken as already received (a retried request is harmless)
    DELETE .../tasks/{task_id}/logs/{stream}?attempt=A            the task ended: forget its log

`stream` is stdout or stderr. The spool is bounded: LOG_MAX bytes per log (older lines are let
go, rows keep their absolute numbers), TOTAL_MAX bytes and LOGS_MAX logs in all (the log
appended to least recently goes first). It is lost when the web process restarts; the final
log in the datastore does not depend on it.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from aiohttp import web

from . import sql
from .database import DB_KEY
from .http import ApiError, endpoint, json_text
from .inputs import SMALLINT_MAX, attempt_number, path_ids

LOG_MAX = 2 * 1024 * 1024
TOTAL_MAX = 64 * 1024 * 1024
LOGS_MAX = 512
CHUNK_MAX = 1024 * 1024  # bytes of one request
STREAMS = ("stdout", "stderr")

# (flow_id, run id, step_name, task id, attempt, stream), the ids as pathspecs name them
LogKey = tuple[str, str, str, str, int, str]


class OffsetGap(Exception):
    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


@dataclass
class SpooledLog:
    length: int = 0  # bytes received
    first_row: int = 0  # the row number of lines[0]
    lines: deque[bytes] = field(default_factory=deque)  # complete lines, without their newline
    partial: bytes = b""  # the unfinished last line
    held: int = 0  # bytes in lines and partial

    def append(self, data: bytes) -> None:
        self.length += len(data)
        self.held += len(data)  # a line's newline counts as its one byte more
        complete, newline, rest = (self.partial + data).rpartition(b"\n")
        if newline:
            self.lines.extend(complete.split(b"\n"))
        self.partial = rest

    def trim(self, limit: int) -> None:
        """Let the oldest lines go until at most `limit` bytes are held."""
        while self.held > limit and self.lines:
            self.held -= len(self.lines.popleft()) + 1
            self.first_row += 1
        if self.held > limit:  # one unfinished line longer than the limit
            self.partial = self.partial[-limit:]
            self.held = len(self.partial)

    def rows(self) -> list[bytes]:
        """Every line held, the unfinished one last."""
        return [*self.lines, self.partial] if self.partial else list(self.lines)


class LogSpool:
    def __init__(self, log_max: int = LOG_MAX, total_max: int = TOTAL_MAX, logs_max: int = LOGS_MAX) -> None:
        self.log_max = log_max
        self.total_max = total_max
        self.logs_max = logs_max
        self._logs: OrderedDict[LogKey, SpooledLog] = OrderedDict()
        self._held = 0

    def append(self, key: LogKey, offset: int, data: bytes) -> int:
        """Add the bytes of `key` from `offset` on; return the bytes received. OffsetGap when
        `offset` is past them."""
        log = self._logs.pop(key, None) or SpooledLog()
        self._logs[key] = log
        if offset > log.length:
            raise OffsetGap(log.length)
        fresh = data[log.length - offset:]
        if fresh:
            self._held -= log.held
            log.append(fresh)
            log.trim(self.log_max)
            self._held += log.held
            self._evict()
        return log.length

    def drop(self, key: LogKey) -> None:
        log = self._logs.pop(key, None)
        if log is not None:
            self._held -= log.held

    def get(self, key: LogKey) -> SpooledLog | None:
        return self._logs.get(key)

    def __len__(self) -> int:
        return len(self._logs)

    @property
    def held(self) -> int:
        return self._held

    def _evict(self) -> None:
        while len(self._logs) > 1 and (len(self._logs) > self.logs_max or self._held > self.total_max):
            _, log = self._logs.popitem(last=False)
            self._held -= log.held


SPOOL_KEY = web.AppKey("mfcolab_live_logs", LogSpool)


async def _log_key(request: web.Request) -> LogKey:
    stream = request.match_info["stream"]
    if stream not in STREAMS:
        raise ApiError(404, f"no such log stream {stream[:20]!r}: use stdout or stderr")
    raw_attempt = request.query.get("attempt")
    if raw_attempt is None:
        raise ApiError(400, "attempt is required (?attempt=N)")
    attempt = attempt_number(raw_attempt)
    if attempt > SMALLINT_MAX:
        raise ApiError(400, f"attempt must be at most {SMALLINT_MAX}")
    ids = path_ids(request.match_info)
    row = await request.app[DB_KEY].fetchrow(sql.TASK_PATHSPEC.get(ids.run, ids.task), *ids.params)
    if row is None:
        raise ApiError(404, f"{ids} does not exist")
    return ids.flow_id, row[0], ids.step_name or "", row[1], attempt, stream


def _offset(request: web.Request) -> int:
    raw = request.query.get("offset", "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 15:
        raise ApiError(400, "offset must be a non-negative integer (?offset=N)")
    return int(raw)


async def _body(request: web.Request) -> bytes:
    data = bytearray()
    while len(data) <= CHUNK_MAX and (piece := await request.content.read(CHUNK_MAX + 1 - len(data))):
        data += piece
    if len(data) > CHUNK_MAX:
        raise ApiError(413, f"send at most {CHUNK_MAX} bytes of a log per request")
    return bytes(data)


@endpoint
async def append_log(request: web.Request) -> web.Response:
    offset = _offset(request)
    data = await _body(request)
    key = await _log_key(request)
    try:
        length = request.app[SPOOL_KEY].append(key, offset, data)
    except OffsetGap as gap:
        return json_text(json.dumps({"length": gap.length, "message": f"offset {offset} is past the {gap.length} bytes received"}), 409)
    return json_text(json.dumps({"length": length}))


@endpoint
async def drop_log(request: web.Request) -> web.Response:
    key = await _log_key(request)
    request.app[SPOOL_KEY].drop(key)
    return json_text(json.dumps({"length": 0}))
