"""The snapshot layout in the root folder, named in one place: paths, and file names with their parsers.

    <root>/snapshots/
      manifest.json                        which pieces form complete states (manifest.py; written last)
      writer.json                          which stack ships here (writer.py)
      base/<generation>/base.tar.gz        pg_basebackup, tar format
      base/<generation>/pg_wal.tar.gz      the WAL that makes the base consistent
      base/<generation>/backup_manifest
      base/<generation>/generation.json    the generation record (written after the pieces)
      wal/<system id>/<segment>.gz         completed WAL segments, gzip
      wal/<system id>/<segment>.partial.gz the unfinished last segment, after a clean stop
      wal/<system id>/<timeline>.history.gz

Every name comes in a format/parse pair; a parser refuses, with SnapshotError, any name its
formatter could not have made (the names are read from a folder others can write). Files are
written under a temporary name in their final folder, then renamed: the pieces by rsync
(transport.py, `.<name>.XXXXXX`), the manifest and the records by `files.write_atomic`
(`.<name>.tmp-<pid>-<random>`). `is_temp` recognises both kinds of leftovers.
Local folders the replica stages in (outbox, base staging, restore WAL) are named here too.
"""

from __future__ import annotations

import calendar
import os
import re
import secrets
import time
from pathlib import Path

from ..errors import SnapshotError
from ..files import is_temp_name
from ..settings import Settings

MANIFEST = "manifest.json"
WRITER_CLAIM = "writer.json"
GENERATION_RECORD = "generation.json"

_GENERATION_RE = re.compile(r"([0-9]{8}T[0-9]{6})([0-9]{3})Z-[0-9a-f]{4}")
_SEGMENT_RE = re.compile(r"[0-9A-F]{24}")
_HISTORY_RE = re.compile(r"[0-9A-F]{8}\.history")
_LSN_RE = re.compile(r"([0-9A-F]{1,8})/([0-9A-F]{1,8})")
_SYSTEM_ID_RE = re.compile(r"[0-9]{1,20}")
_RSYNC_TEMP_RE = re.compile(r"\..+\.[A-Za-z0-9]{6}")  # rsync's mkstemp name for a file it is writing
_GENERATION_HINT = "--generation one of the known ones, or no --generation for the newest"
_FOREIGN_HINT = "a file in the snapshots folder was not written by mfcolab: restore an older generation (mfcolab restore --list)"


# --- folders -------------------------------------------------------------------------------

def base_dir(settings: Settings, generation: str) -> Path:
    return settings.snapshots_dir / "base" / generation


def wal_dir(settings: Settings, system_identifier: str) -> Path:
    return settings.snapshots_dir / "wal" / system_identifier


def writer_claim_path(settings: Settings) -> Path:
    return settings.snapshots_dir / WRITER_CLAIM


def manifest_path(settings: Settings) -> Path:
    return settings.snapshots_dir / MANIFEST


def restore_wal_dir(settings: Settings) -> Path:
    """Local folder the restore_command reads WAL from (the server user cannot read the root folder)."""
    return settings.local / "restore-wal"


def base_staging_dir(settings: Settings) -> Path:
    """Local folder pg_basebackup writes into, before its files move to the outbox."""
    return settings.local / "base-staging"


def outbox_dir(settings: Settings) -> Path:
    """Local folder laid out like the snapshots folder: what the current cycle ships."""
    return settings.local / "outbox"


def base_outbox_dir(settings: Settings) -> Path:
    """The outbox of a routine new base, shipped beside the cycles (`basebackup.BaseUpload`)."""
    return settings.local / "outbox-base"


# --- names: format/parse pairs -------------------------------------------------------------

def format_generation(created: float) -> str:
    """Names sort in creation order: UTC time to the millisecond, then a random tag."""
    millis = int(created * 1000)  # once: the seconds and the milliseconds must come from one rounding
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(millis // 1000))
    return f"{stamp}{millis % 1000:03d}Z-{secrets.token_hex(2)}"


def parse_generation(name: str) -> float:
    """The creation time encoded in a generation name; SnapshotError if it is not one."""
    match = _GENERATION_RE.fullmatch(name)
    try:
        if match is None:
            raise ValueError(name)
        return calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%S")) + int(match.group(2)) / 1000
    except ValueError:
        raise SnapshotError(f"{name!r} is not a generation name", _GENERATION_HINT) from None


def is_generation(name: str) -> bool:
    try:
        parse_generation(name)
    except SnapshotError:
        return False
    return True


def segments_per_id(segment_size: int) -> int:
    return 0x100000000 // segment_size


def format_segment(timeline: int, segno: int, segment_size: int) -> str:
    per = segments_per_id(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment(name: str, segment_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a WAL file name; SnapshotError if it is not one."""
    per = segments_per_id(segment_size)
    if not _SEGMENT_RE.fullmatch(name) or int(name[16:], 16) >= per:
        raise SnapshotError(f"{name!r} is not a WAL segment name", _FOREIGN_HINT)
    return int(name[:8], 16), int(name[8:16], 16) * per + int(name[16:], 16)


def is_segment(name: str) -> bool:
    return bool(_SEGMENT_RE.fullmatch(name))


def format_history(timeline: int) -> str:
    return f"{timeline:08X}.history"


def is_history(name: str) -> bool:
    return bool(_HISTORY_RE.fullmatch(name))


def history_timeline(name: str) -> int:
    """The timeline a history file name names; SnapshotError if it is not one."""
    if not is_history(name):
        raise SnapshotError(f"{name!r} is not a timeline history name", _FOREIGN_HINT)
    return int(name[:8], 16)


def is_system_identifier(text: str) -> bool:
    """What pg_controldata prints as the database system identifier: a 64-bit number in decimal."""
    return bool(_SYSTEM_ID_RE.fullmatch(text)) and int(text) < 2**64


def parse_lsn(text: str) -> int:
    """A WAL location as Postgres prints it (`16/B374D848`); SnapshotError if it is not one."""
    match = _LSN_RE.fullmatch(text.upper())
    if match is None:
        raise SnapshotError(f"{text!r} is not a WAL location", _FOREIGN_HINT)
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def wal_piece(name: str) -> str:
    """File name of a shipped WAL segment or history file."""
    return f"{name}.gz"


def partial_piece(segment: str) -> str:
    return f"{segment}.partial.gz"


def is_plain_name(name: str) -> bool:
    """A name that stays in its folder and is no temporary: what a piece of a base may be called."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name and not name.startswith(".")


def is_temp(name: str) -> bool:
    """A file being written (or left behind by a killed writer): ours or rsync's. No piece of a
    snapshot has a name starting with a dot."""
    return is_temp_name(name) or (name.startswith(".") and bool(_RSYNC_TEMP_RE.fullmatch(name)))


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files a killed writer left behind; returns how many."""
    removed = 0
    if not folder.is_dir():
        return 0
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            if is_temp(name):
                try:
                    os.unlink(os.path.join(parent, name))
                    removed += 1
                except OSError:
                    pass
    return removed
