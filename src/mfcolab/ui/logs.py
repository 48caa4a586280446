"""Routes for logs: a page of a task attempt's stdout or stderr, and the whole log as a file.

Metaflow writes two files per stream and attempt, `<attempt>.runtime_<stream>.log` (the
runtime's lines about the task) and `<attempt>.task_<stream>.log` (the task's own output),
every line prefixed with an mflog header carrying a UTC timestamp. They are read in place
(never moved or copied: `datastore.py`) and merged by timestamp; a poll of a growing log reads
only the bytes added since the last one (`logtail.py`). The header is parsed here
rather than by `metaflow.mflog`: importing metaflow in the web process loads its plugins and
config, and a regex over bytes is several times faster than its per-line strptime.
While a task runs, the datastore has no log yet: its runtime's lines so far come from the
spool the runtime feeds (`service/livelogs.py`), one source in arrival order; once either file
is in the datastore, the datastore's log is what is shown.
`row` is the absolute 0-based line number of the merged log. Pages are aligned blocks of
`_limit` rows: `_order=+row` page p holds rows (p-1)*limit...; `_order=-row` counts blocks
from the end and returns each block newest first (page 1 is the last block).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..service.http import endpoint
from . import envelope
from .context import context
from .datastore import DatastoreRoots
from .logtail import GrowingLogs
from .query import number, stream_name
from .taskfiles import TaskFiles, locate

SOURCES = ("runtime", "task")
LOG_MAX = 256 * 1024 * 1024  # bytes of one log file read
PAGE_DEFAULT = 1000
PAGE_MAX = 10_000


@dataclass(frozen=True)
class Line:
    timestamp: int | None  # epoch milliseconds
    text: str


# An mflog line: `[MFLOG|0|2026-11-29T18:57:02.545050Z|runtime|<id>]text`, with `[!` in front
# for lines still to be persisted. Lines without the header sort after every stamped line.
_MFLOG = re.compile(rb"(?:\[!)?\[MFLOG\|0\|(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z\|[^|]*\|[^\]]*\](.*)")
_UNSTAMPED = 2**62


def parse_line(raw: bytes) -> tuple[int, bytes]:
    """(epoch milliseconds, text) of one log line; `_UNSTAMPED` when it has no mflog header."""
    match = _MFLOG.match(raw)
    if match is None:
        return _UNSTAMPED, raw
    year, month, day, hour, minute, second, fraction, text = match.groups()
    try:
        moment = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                                   tzinfo=datetime.UTC)
    except ValueError:
        return _UNSTAMPED, raw
    millis = int((fraction or b"0").ljust(6, b"0")[:3])
    return int(moment.timestamp()) * 1000 + millis, text


def _line(raw: bytes) -> tuple[int, Line]:
    stamp, text = parse_line(raw)
    return stamp, Line(None if stamp == _UNSTAMPED else stamp, text.decode("utf-8", "replace"))


_LOGS = GrowingLogs(_line, LOG_MAX)


@dataclass(frozen=True)
class LogView:
    first: int  # the first row still held (the spool lets the oldest lines of a long log go)
    count: int  # rows in the log
    line: Callable[[int], Line]

    def rows(self, start: int, stop: int) -> range:
        return range(max(start, self.first), min(stop, self.count))


def read_log(request: web.Request, files: TaskFiles, stream: str) -> LogView:
    """The attempt's log of `stream`: the datastore's when it has one, else the spooled lines
    of the running task (none for a task without either)."""
    ctx = context(request)
    paths = [ctx.roots.path(files.folder, f"{files.attempt}.{source}_{stream}.log") for source in SOURCES]
    key = (files.flow_id, files.run_id, files.step_name, files.task_id, files.attempt, stream)
    spooled = ctx.spool.get(key)
    if spooled is None or any(ctx.roots.size(path) is not None for path in paths):
        lines = merged_lines(ctx.roots, paths)
        return LogView(0, len(lines), lines.__getitem__)
    first, raws = spooled.first_row, spooled.rows()
    return LogView(first, first + len(raws), lambda row: _line(raws[row - first])[1])


def merged_lines(roots: DatastoreRoots, paths: list[Path]) -> list[Line]:
    """The lines of `paths`, both sources merged by timestamp (a source keeps its own order);
    only the bytes added since the last read are read (`logtail.py`)."""
    return [line for _, _, _, line in _LOGS.read(roots.open, paths)]


@endpoint
async def log_page(request: web.Request) -> web.Response:
    stream = stream_name(request.match_info["stream"])
    files = await locate(request)
    limit = number(request.query, "_limit", PAGE_DEFAULT, 1, PAGE_MAX)
    page = number(request.query, "_page", 1, 1, 10**9)
    descending = request.query.get("_order", "").strip().startswith("-")
    log = read_log(request, files, stream)
    blocks = math.ceil(log.count / limit)
    block = blocks - page if descending else page - 1
    rows = log.rows(block * limit, (block + 1) * limit) if 0 <= block < blocks else range(0)
    ordered = reversed(rows) if descending else rows
    data = json.dumps([{"row": row, "timestamp": line.timestamp, "line": line.text}
                       for row in ordered for line in (log.line(row),)])
    return envelope.listing(request, data, page, page < blocks, last=max(blocks, 1))


@endpoint
async def log_download(request: web.Request) -> web.StreamResponse:
    stream = stream_name(request.match_info["stream"])
    files = await locate(request)
    log = read_log(request, files, stream)
    name = f"{stream}_{files.flow_id}_{files.run_id}_{files.step_name}_{files.task_id}-{files.attempt}.txt"
    response = web.StreamResponse(headers={
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{_header_safe(name)}"',
    })
    await response.prepare(request)
    chunk: list[str] = []
    for row in log.rows(0, log.count):
        chunk.append(log.line(row).text)
        if len(chunk) >= 5000:
            await response.write(("\n".join(chunk) + "\n").encode())
            chunk = []
    if chunk:
        await response.write(("\n".join(chunk) + "\n").encode())
    await response.write_eof()
    return response


def _header_safe(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
