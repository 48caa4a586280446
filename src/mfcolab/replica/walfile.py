"""WAL files read from folders someone else can write, checked before they are used.

The staging folder and pg_wal belong to the Postgres server user, and the snapshots come from
the shared root folder: a file there may be a link to a secret, a short or foreign file, or
hand-made. `read_staged` opens without following links and accepts only a regular file with one
name; `check_segment` accepts only a segment of exactly the segment size whose first page
header names this very segment (its address, segment size, block size and database).
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from ..errors import SnapshotError

# The long header on the first page of every segment (PostgreSQL's XLogLongPageHeaderData).
_LONG_HEADER = struct.Struct("<HHIQI4xQII")
_XLP_LONG_HEADER = 0x0002
_BLOCK_SIZE = 8192
MAX_HISTORY_BYTES = 1 << 20  # timeline history files are a few lines each


class RefusedWal(SnapshotError):
    """A WAL file that is not what its name says; it is left where it is."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"refused {path}: {reason}", "nothing to do if it goes away; otherwise remove it and check who wrote it")
        self.reason = reason


def read_staged(path: Path, max_bytes: int) -> bytes:
    """The contents of a regular file, opened without following a link. Refuses links, special
    files, files with more than one name (a hard link to someone else's file) and files over
    `max_bytes`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        reason = "it is a symbolic link" if os.path.islink(path) else (exc.strerror or str(exc))
        raise RefusedWal(path, reason) from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedWal(path, "it is not a regular file")
        if info.st_nlink != 1:
            raise RefusedWal(path, f"it has {info.st_nlink} names (a hard link)")
        if info.st_size > max_bytes:
            raise RefusedWal(path, f"it has {info.st_size} bytes, more than {max_bytes}")
        return handle.read(max_bytes + 1)


def read_segment(path: Path, segment_size: int, segno: int, system_identifier: str) -> bytes:
    """A staged or local segment, read safely and checked (see `check_segment`)."""
    data = read_staged(path, segment_size)
    check_segment(path, data, segment_size, segno, system_identifier)
    return data


def check_segment(path: Path, data: bytes, segment_size: int, segno: int, system_identifier: str) -> None:
    """Raise RefusedWal unless `data` is a whole segment number `segno` of this database."""
    if len(data) != segment_size:
        raise RefusedWal(path, f"it has {len(data)} bytes, a segment has {segment_size}")
    _magic, info, timeline, page_address, _rem, sysid, seg_size, block_size = _LONG_HEADER.unpack_from(data)
    if not info & _XLP_LONG_HEADER or timeline < 1:
        raise RefusedWal(path, "it does not start with a WAL segment header")
    if page_address != segno * segment_size:
        raise RefusedWal(path, f"its header is for the WAL at {page_address:X}, not {segno * segment_size:X}")
    if str(sysid) != system_identifier or seg_size != segment_size or block_size != _BLOCK_SIZE:
        raise RefusedWal(path, f"its header is for another database (system {sysid}, segment size {seg_size})")


def check_history(path: Path, data: bytes) -> None:
    """Raise RefusedWal unless `data` reads as a timeline history file (text, tab-separated)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise RefusedWal(path, "it is not a timeline history file") from exc
    for line in text.splitlines():
        fields = line.split("\t")
        if line.strip() and not line.startswith("#") and not (len(fields) >= 2 and fields[0].strip().isdigit() and "/" in fields[1]):
            raise RefusedWal(path, "it is not a timeline history file")
