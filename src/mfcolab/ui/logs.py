"""Routes for logs: a page of a task attempt's stdout or stderr, and the whole log as a file.

Metaflow writes two files per stream and attempt, `<attempt>.runtime_<stream>.log` (the
runtime's lines about the task) and `<attempt>.task_<stream>.log` (the task's own output),
every line prefixed with an mflog header carrying a UTC timestamp. They are read in place
(never moved or copied: `datastore.py`) and merged by timestamp with Metaflow's own parser.
`row` is the absolute 0-based line number of the merged log. Pages are aligned blocks of
`_limit` rows: `_order=+row` page p holds rows (p-1)*limit...; `_order=-row` counts blocks
from the end and returns each block newest first (page 1 is the last block).
"""

from __future__ import annotations

import calendar
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from ..service.http import endpoint, json_text
from . import envelope
from .context import context
from .query import number, stream_name
from .taskfiles import TaskFiles, locate

SOURCES = ("runtime", "task")
LOG_MAX = 256 * 1024 * 1024  # bytes of one log file read
PAGE_DEFAULT = 1000
PAGE_MAX = 10_000
CACHED_LOGS = 8


@dataclass(frozen=True)
class Line:
    timestamp: int | None  # epoch milliseconds
    text: str


class LogCache:
    """Merged logs keyed by their files' identity (path, size, mtime): a growing log is re-read."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[object, ...], list[Line]] = OrderedDict()

    def get(self, key: tuple[object, ...]) -> list[Line] | None:
        lines = self._entries.get(key)
        if lines is not None:
            self._entries.move_to_end(key)
        return lines

    def put(self, key: tuple[object, ...], lines: list[Line]) -> None:
        self._entries[key] = lines
        while len(self._entries) > CACHED_LOGS:
            self._entries.popitem(last=False)


_CACHE = LogCache()


def _read_sources(request: web.Request, files: TaskFiles, stream: str) -> tuple[tuple[object, ...], list[bytes]]:
    roots = context(request).roots
    key: list[object] = []
    blobs = []
    for source in SOURCES:
        path = roots.path(files.folder, f"{files.attempt}.{source}_{stream}.log")
        try:
            with roots.open(path) as handle:
                info = os.fstat(handle.fileno())
                key.append((str(path), info.st_size, info.st_mtime_ns))
                blobs.append(handle.read(LOG_MAX))
        except OSError:
            key.append((str(path), None))
    return tuple(key), blobs


def merged_lines(request: web.Request, files: TaskFiles, stream: str) -> list[Line]:
    key, blobs = _read_sources(request, files, stream)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    from metaflow.mflog.mflog import MISSING_TIMESTAMP, merge_logs

    lines = []
    for parsed in merge_logs(blobs):  # type: ignore[no-untyped-call]
        stamp = None if parsed.utc_tstamp == MISSING_TIMESTAMP else (
            calendar.timegm(parsed.utc_tstamp.timetuple()) * 1000 + parsed.utc_tstamp.microsecond // 1000)
        text = parsed.msg.decode("utf-8", "replace") if isinstance(parsed.msg, bytes) else str(parsed.msg)
        lines.append(Line(stamp, text.rstrip("\n")))
    _CACHE.put(key, lines)
    return lines


@endpoint
async def log_page(request: web.Request) -> web.Response:
    stream = stream_name(request.match_info["stream"])
    files = await locate(request)
    limit = number(request.query, "_limit", PAGE_DEFAULT, 1, PAGE_MAX)
    page = number(request.query, "_page", 1, 1, 10**9)
    descending = request.query.get("_order", "").strip().startswith("-")
    lines = merged_lines(request, files, stream)
    blocks = math.ceil(len(lines) / limit)
    block = blocks - page if descending else page - 1
    rows = range(block * limit, min((block + 1) * limit, len(lines))) if 0 <= block < blocks else range(0)
    ordered = reversed(rows) if descending else rows
    data = json.dumps([{"row": row, "timestamp": lines[row].timestamp, "line": lines[row].text} for row in ordered])
    response = envelope.listing(request, data, page, page < blocks)
    doc = json.loads(response.body)  # type: ignore[arg-type]
    doc["pages"]["last"] = max(blocks, 1)
    return json_text(json.dumps(doc))


@endpoint
async def log_download(request: web.Request) -> web.StreamResponse:
    stream = stream_name(request.match_info["stream"])
    files = await locate(request)
    lines = merged_lines(request, files, stream)
    name = f"{stream}_{files.flow_id}_{files.run_id}_{files.step_name}_{files.task_id}-{files.attempt}.txt"
    response = web.StreamResponse(headers={
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{_header_safe(name)}"',
    })
    await response.prepare(request)
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.text)
        if len(chunk) >= 5000:
            await response.write(("\n".join(chunk) + "\n").encode())
            chunk = []
    if chunk:
        await response.write(("\n".join(chunk) + "\n").encode())
    await response.write_eof()
    return response


def _header_safe(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
