"""The snapshot layout in the root folder, named in one place, and the manifest.

    <root>/snapshots/
      manifest.json                        which pieces form complete states (written last)
      writer.json                          which stack ships here (`writer.py`)
      base/<generation>/base.tar.gz        pg_basebackup, tar format
      base/<generation>/pg_wal.tar.gz      the WAL that makes the base consistent
      base/<generation>/backup_manifest
      base/<generation>/generation.json    the generation record (written after the pieces)
      wal/<system id>/<segment>.gz         completed WAL segments, gzip
      wal/<system id>/<segment>.partial.gz the unfinished last segment, after a clean stop
      wal/<system id>/<timeline>.history.gz

The root folder is Google Drive on Colab: no links, no directory renames, no reliance on modes.
Every file is written under a temporary name in its final folder, synced, then renamed: the
pieces by rsync (`transport.py`, temporary names `.<name>.XXXXXX`), the manifest here
(`.<name>.tmp-<pid>-<random>`). Both kinds of leftovers are recognised by `is_temp`.
A generation is one base plus the contiguous run of WAL segments after it; the manifest lists
the complete generations and the shipped WAL ranges, and is itself replaced atomically.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import os
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import SnapshotError
from ..settings import Settings
from ..sharedfile import RefusedFile, read_regular

FORMAT = 1
MANIFEST = "manifest.json"
WRITER_CLAIM = "writer.json"
GENERATION_RECORD = "generation.json"
TEMP_MARK = ".tmp-"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a manifest or generation record read back (a few KB in practice)

_SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
_HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
_RSYNC_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9]{6}$")  # rsync's mkstemp name for a file it is writing


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
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(created))
    return f"{stamp}{int(created * 1000) % 1000:03d}Z-{secrets.token_hex(2)}"


def parse_generation(name: str) -> float:
    """The creation time encoded in a generation name; SnapshotError if it is not one."""
    match = re.fullmatch(r"(\d{8}T\d{6})(\d{3})Z-[0-9a-f]{4}", name)
    if not match:
        raise SnapshotError(f"{name!r} is not a generation name", "--generation one of the known ones, or no --generation for the newest")
    return calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%S")) + int(match.group(2)) / 1000


def segments_per_id(segment_size: int) -> int:
    return 0x100000000 // segment_size


def format_segment(timeline: int, segno: int, segment_size: int) -> str:
    per = segments_per_id(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment(name: str, segment_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a WAL file name."""
    if not _SEGMENT_RE.match(name):
        raise SnapshotError(f"{name!r} is not a WAL segment name", "")
    return int(name[:8], 16), int(name[8:16], 16) * segments_per_id(segment_size) + int(name[16:], 16)


def is_segment(name: str) -> bool:
    return bool(_SEGMENT_RE.match(name))


def is_history(name: str) -> bool:
    return bool(_HISTORY_RE.match(name))


def history_timeline(name: str) -> int:
    return int(name[:8], 16)


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def wal_piece(name: str) -> str:
    """File name of a shipped WAL segment or history file."""
    return f"{name}.gz"


def partial_piece(segment: str) -> str:
    return f"{segment}.partial.gz"


def is_temp(name: str) -> bool:
    """A file being written (or left behind by a killed writer): ours or rsync's. No piece of a
    snapshot has a name starting with a dot."""
    return name.startswith(".") and (TEMP_MARK in name or bool(_RSYNC_TEMP_RE.match(name)))


# --- the manifest --------------------------------------------------------------------------

@dataclasses.dataclass
class Generation:
    id: str
    system_identifier: str
    timeline: int
    segment_size: int
    start_lsn: str
    end_lsn: str
    start_segment: int
    files: dict[str, int]  # piece name -> bytes
    created: float
    wal_bytes: int = 0  # WAL shipped while this was the newest generation

    @property
    def base_bytes(self) -> int:
        return sum(self.files.values())


@dataclasses.dataclass
class WalRange:
    """Segments first..last of one timeline, all shipped (last == first - 1: none yet)."""

    system_identifier: str
    timeline: int
    segment_size: int
    first: int
    last: int
    bytes: int = 0
    shipped_at: float = 0.0
    partial: int | None = None  # segment last + 1, shipped unfinished after a clean stop
    partial_bytes: int = 0

    def name(self, segno: int) -> str:
        return format_segment(self.timeline, segno, self.segment_size)

    def covers_start(self, generation: Generation) -> bool:
        return (
            self.system_identifier == generation.system_identifier
            and self.timeline == generation.timeline
            and self.first <= generation.start_segment <= self.last + 1
        )


@dataclasses.dataclass
class Manifest:
    generations: list[Generation] = dataclasses.field(default_factory=list)  # oldest first
    wal: list[WalRange] = dataclasses.field(default_factory=list)
    history: list[str] = dataclasses.field(default_factory=list)  # "<sysid>/<name>"
    updated: float = 0.0

    def newest(self, system_identifier: str | None = None) -> Generation | None:
        for generation in reversed(self.generations):
            if system_identifier is None or generation.system_identifier == system_identifier:
                return generation
        return None

    def find(self, generation_id: str) -> Generation:
        for generation in self.generations:
            if generation.id == generation_id:
                return generation
        known = ", ".join(g.id for g in self.generations) or "none"
        raise SnapshotError(f"no generation {generation_id!r} in the root folder (known: {known})", "--generation one of the known ones, or no --generation for the newest")

    def range_for(self, generation: Generation) -> WalRange | None:
        for wal_range in self.wal:
            if wal_range.covers_start(generation):
                return wal_range
        return None

    def end_segment(self, generation: Generation) -> int:
        """Last segment to replay for `generation`: the end of its range, or for an older
        generation the segment where the next base on the same timeline began."""
        wal_range = self.range_for(generation)
        if wal_range is None:
            return generation.start_segment - 1
        end = wal_range.last
        later = self.generations[self.generations.index(generation) + 1:]
        for other in later:
            if other.system_identifier == generation.system_identifier and other.timeline == generation.timeline:
                end = min(end, other.start_segment)
                break
        return end

    def restored_until(self, generation: Generation) -> float:
        """When the newest WAL a restore of `generation` would replay was shipped."""
        wal_range = self.range_for(generation)
        if wal_range is None or generation is not self.newest():
            return generation.created
        return max(generation.created, wal_range.shipped_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "updated": self.updated,
            "generations": [dataclasses.asdict(g) for g in self.generations],
            "wal": [dataclasses.asdict(r) for r in self.wal],
            "history": list(self.history),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise SnapshotError(f"unknown snapshot manifest format {data.get('format')!r}", "upgrade mfcolab")
        return cls(
            generations=[Generation(**g) for g in data.get("generations", [])],
            wal=[WalRange(**r) for r in data.get("wal", [])],
            history=list(data.get("history", [])),
            updated=float(data.get("updated", 0.0)),
        )

    def copy(self) -> Manifest:
        return Manifest.from_json(json.loads(json.dumps(self.to_json())))


def load_manifest(settings: Settings) -> Manifest | None:
    """The manifest, or one rebuilt from the generation records if it is missing or unreadable.
    None when the root folder holds no snapshot at all. OSError passes through (root unreadable)."""
    path = manifest_path(settings)
    try:
        return Manifest.from_json(json.loads(read_regular(path, MAX_MANIFEST_BYTES)))
    except FileNotFoundError:
        pass
    except (RefusedFile, ValueError, TypeError, SnapshotError):
        pass
    return rebuild_manifest(settings)


def rebuild_manifest(settings: Settings) -> Manifest | None:
    """Reconstruct what the manifest would say from generation.json files and the WAL folder."""
    bases = settings.snapshots_dir / "base"
    if not bases.is_dir():
        return None
    manifest = Manifest()
    for folder in sorted(bases.iterdir()):
        try:
            generation = Generation(**json.loads(read_regular(folder / GENERATION_RECORD, MAX_MANIFEST_BYTES)))
        except (OSError, ValueError, TypeError):
            continue
        if all((folder / name).is_file() for name in generation.files):
            manifest.generations.append(generation)
    manifest.generations.sort(key=lambda g: g.created)
    for generation in manifest.generations:
        if manifest.range_for(generation) is None:
            manifest.wal.append(_scan_range(settings, generation))
        folder = wal_dir(settings, generation.system_identifier)
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            entry = f"{generation.system_identifier}/{name[:-3]}"
            if name.endswith(".history.gz") and entry not in manifest.history:
                manifest.history.append(entry)
    return manifest if manifest.generations else None


def _scan_range(settings: Settings, generation: Generation) -> WalRange:
    folder = wal_dir(settings, generation.system_identifier)
    wal_range = WalRange(generation.system_identifier, generation.timeline, generation.segment_size,
                         generation.start_segment, generation.start_segment - 1)
    while (folder / wal_piece(wal_range.name(wal_range.last + 1))).is_file():
        wal_range.last += 1
    return wal_range


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


def save_manifest(settings: Settings, manifest: Manifest) -> int:
    """Replace the manifest atomically; returns the bytes written."""
    manifest.updated = time.time()
    return write_atomic(manifest_path(settings), [json_bytes(manifest.to_json())])


# --- atomic writes into the root folder ----------------------------------------------------

def temp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(3)}")


def write_atomic(dest: Path, chunks: Iterable[bytes], mode: int | None = None) -> int:
    """Write `chunks` to a temporary name beside `dest`, sync it, rename it over `dest`, sync the
    folder. `mode` (0o600 for a secret) is the temporary file's mode from its creation on."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(dest)
    written = 0
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)  # the umask may have taken bits the mode asks for
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, dest)
    except BaseException:
        try:
            temp.unlink()
        except OSError:
            pass
        raise
    sync_folder(dest.parent)
    return written


def sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # FUSE folders (Drive) may not support it; the rename is what makes the file visible
    finally:
        os.close(fd)


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
