"""Routes for logs: a page of a task attempt's stdout or stderr, and the whole log as a file.

Metaflow writes two files per stream and attempt, `<attempt>.runtime_<stream>.log` (the
runtime's lines about the task) and `<attempt>.task_<stream>.log` (the task's own output),
every line prefixed with an mflog header carrying a UTC timestamp. They are read in place
(never moved or copied: `datastore.py`) and merged by timestamp. The header is parsed here
rather than by `metaflow.mflog`: importing metaflow in the web process loads its plugins and
config, and a regex over bytes is several times faster than its per-line strptime.
`row` is the absolute 0-based line number of the merged log. Pages are aligned blocks of
`_limit` rows: `_order=+row` page p holds rows (p-1)*limit...; `_order=-row` counts blocks
from the end and returns each block newest first (page 1 is the last block).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
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


def merge(blobs: list[bytes]) -> list[Line]:
    """The lines of every source, merged by timestamp (stable: a source keeps its own order)."""
    parsed = []
    for source, blob in enumerate(blobs):
        raws = blob.split(b"\n")
        if raws and not raws[-1]:
            raws.pop()  # the file ends with a newline
        for index, raw in enumerate(raws):
            stamp, text = parse_line(raw.rstrip(b"\r"))
            parsed.append((stamp, source, index, text))
    parsed.sort(key=lambda item: (item[0], item[1], item[2]))
    return [Line(None if stamp == _UNSTAMPED else stamp, text.decode("utf-8", "replace"))
            for stamp, _, _, text in parsed]


def merged_lines(request: web.Request, files: TaskFiles, stream: str) -> list[Line]:
    key, blobs = _read_sources(request, files, stream)
    cached = _CACHE.get(key)
    if cached is None:
        cached = merge(blobs)
        _CACHE.put(key, cached)
    return cached


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
