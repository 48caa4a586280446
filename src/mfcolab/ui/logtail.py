"""Logs that grow while a task runs: each read takes only the bytes added since the last one.

The UI polls a running task's log page every few seconds. `GrowingLogs` keeps, per log (its
source files), how far each file was parsed, the last TAIL_CHECK bytes before that point and
the merged lines. A poll stats each file; when it grew and those tail bytes are unchanged (the
saver rewrites the whole file, so the inode says nothing), only the new complete lines are
read and parsed; lines stamped no earlier than the last merged one are appended, others cause
one re-sort. Lines are parsed once (`parse`), so an unchanged log costs no parsing at all. A file that shrank or whose tail changed is read again whole. An unfinished last
line is shown but not kept: the next poll reads it again.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

TAIL_CHECK = 4096
CACHED_LOGS = 8

# (sort stamp, source number, line number in the source, the parsed line)
Item = tuple[int, int, int, Any]
Parse = Callable[[bytes], tuple[int, Any]]  # a raw line -> (sort stamp, the parsed line)
Opener = Callable[[Path], AbstractContextManager[BinaryIO]]


@dataclass
class SourceState:
    consumed: int = 0  # bytes parsed: up to and including the last newline
    tail: bytes = b""  # the TAIL_CHECK bytes before `consumed`
    count: int = 0  # complete lines parsed


@dataclass
class GrowingLog:
    sources: list[SourceState]
    items: list[Item] = field(default_factory=list)  # merged, complete lines only


class GrowingLogs:
    def __init__(self, parse: Parse, limit: int) -> None:
        self.parse = parse
        self.limit = limit  # bytes of one file read at most
        self.bytes_read = 0  # for tests and benchmarks
        self._logs: OrderedDict[tuple[str, ...], GrowingLog] = OrderedDict()

    def read(self, opener: Opener, paths: list[Path]) -> list[Item]:
        """The merged lines of `paths` (a missing file has none), reading only what is new."""
        key = tuple(map(str, paths))
        log = self._logs.pop(key, None) or GrowingLog([SourceState() for _ in paths])
        self._logs[key] = log
        while len(self._logs) > CACHED_LOGS:
            self._logs.popitem(last=False)
        added: list[Item] = []
        unfinished: list[Item] = []
        for number, path in enumerate(paths):
            fresh, partial, restarted = self._read_source(opener, path, number, log.sources[number])
            if restarted:
                log.items = [item for item in log.items if item[1] != number]
            added += fresh
            unfinished += partial
        _merge_into(log, added)
        if not unfinished:
            return log.items
        return sorted(log.items + unfinished)

    def _read_source(self, opener: Opener, path: Path, number: int,
                     state: SourceState) -> tuple[list[Item], list[Item], bool]:
        """(new complete lines, the unfinished last line, whether the source was read anew)."""
        try:
            with opener(path) as handle:
                size = os.fstat(handle.fileno()).st_size
                restarted = not self._same_prefix(handle, size, state)
                if restarted:
                    state.consumed, state.tail, state.count = 0, b"", 0
                handle.seek(state.consumed)
                blob = handle.read(max(0, self.limit - state.consumed))
        except OSError:
            restarted = state.consumed > 0
            state.consumed, state.tail, state.count = 0, b"", 0
            return [], [], restarted
        self.bytes_read += len(blob)
        complete, newline, rest = blob.rpartition(b"\n")
        fresh: list[Item] = []
        if newline:
            fresh = list(self._items(number, state.count, complete + newline))
            state.consumed += len(complete) + 1
            state.tail = (state.tail + complete + newline)[-TAIL_CHECK:]
            state.count += len(fresh)
        partial = list(self._items(number, state.count, rest)) if rest else []
        return fresh, partial, restarted

    def _same_prefix(self, handle: BinaryIO, size: int, state: SourceState) -> bool:
        if state.consumed == 0:
            return True
        if size < state.consumed:
            return False
        handle.seek(state.consumed - len(state.tail))
        checked = handle.read(len(state.tail))
        self.bytes_read += len(checked)
        return checked == state.tail

    def _items(self, number: int, first: int, blob: bytes) -> Iterator[Item]:
        raws = blob.split(b"\n")
        if raws and not raws[-1]:
            raws.pop()
        for index, raw in enumerate(raws, start=first):
            stamp, line = self.parse(raw.rstrip(b"\r"))
            yield stamp, number, index, line


def _merge_into(log: GrowingLog, added: list[Item]) -> None:
    if not added:
        return
    added.sort()
    if not log.items or added[0] >= log.items[-1]:
        log.items.extend(added)
    else:
        log.items = sorted(log.items + added)
