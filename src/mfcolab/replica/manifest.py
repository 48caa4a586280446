"""The manifest: which generations in the root folder are complete, and which WAL was shipped.

A generation is one base plus the contiguous run of WAL segments after it. The manifest lists
the complete generations (oldest first), the shipped WAL ranges and the timeline history files,
and is replaced atomically (`files.write_atomic`) after the pieces it names. It is read from a
folder every notebook that mounts it may write: `read_manifest` checks every field's type and
every name against the layout (layout.py) and refuses anything else with SnapshotError.
`load_manifest` then falls back on the generation records (`rebuild_manifest`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import SnapshotError
from ..files import write_atomic
from ..settings import Settings
from ..sharedfile import RefusedFile, read_regular
from . import layout

FORMAT = 1
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a manifest or generation record read back (a few KB in practice)
_REFUSED_HINT = "nothing to do: the manifest is rebuilt from the generation records; if this repeats, look at who writes the root folder"


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
        return layout.format_segment(self.timeline, segno, self.segment_size)

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
        raise SnapshotError(f"no generation {generation_id!r} in the root folder (known: {known})",
                            "--generation one of the known ones, or no --generation for the newest")

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
    def from_json(cls, data: object) -> Manifest:
        """The manifest `data` describes; SnapshotError for anything `to_json` would not have written."""
        record = _expect(data, dict, "the manifest")
        if record.get("format") != FORMAT:
            raise SnapshotError(f"unknown snapshot manifest format {record.get('format')!r}", "upgrade mfcolab")
        unknown = set(record) - {"format", "updated", "generations", "wal", "history"}
        if unknown:
            raise SnapshotError(f"the manifest has unknown fields {sorted(unknown)}", _REFUSED_HINT)
        return cls(
            generations=[generation_from(g) for g in _expect(record.get("generations", []), list, "generations")],
            wal=[_wal_range_from(r) for r in _expect(record.get("wal", []), list, "wal")],
            history=[_history_entry(e) for e in _expect(record.get("history", []), list, "history")],
            updated=_number(record.get("updated", 0.0), "updated"),
        )

    def copy(self) -> Manifest:
        return copy.deepcopy(self)


# --- reading and writing -------------------------------------------------------------------

def json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


def write_manifest(path: Path, manifest: Manifest) -> int:
    """Replace the manifest at `path` atomically; returns the bytes written."""
    return write_atomic(path, [json_bytes(manifest.to_json())])


def read_manifest(path: Path) -> Manifest:
    """The manifest at `path`. SnapshotError when it is not one (truncated, tampered, another
    format); FileNotFoundError and other OSErrors pass through."""
    raw = read_regular(path, MAX_MANIFEST_BYTES)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise SnapshotError(f"{path} is not a manifest (cut short or damaged: {exc})", _REFUSED_HINT) from None
    try:
        return Manifest.from_json(data)
    except SnapshotError as exc:
        raise SnapshotError(f"{path} is refused: {exc.message}", exc.hint or _REFUSED_HINT) from None


def save_manifest(settings: Settings, manifest: Manifest) -> int:
    """Stamp the manifest and replace it in the root folder; returns the bytes written."""
    manifest.updated = time.time()
    return write_manifest(layout.manifest_path(settings), manifest)


def load_manifest(settings: Settings) -> Manifest | None:
    """The manifest, or one rebuilt from the generation records if it is missing or refused.
    None when the root folder holds no snapshot at all. OSError passes through (root unreadable)."""
    try:
        return read_manifest(layout.manifest_path(settings))
    except (FileNotFoundError, RefusedFile, SnapshotError):
        return rebuild_manifest(settings)


def rebuild_manifest(settings: Settings) -> Manifest | None:
    """Reconstruct what the manifest would say from generation.json files and the WAL folder."""
    bases = settings.snapshots_dir / "base"
    if not bases.is_dir():
        return None
    manifest = Manifest()
    for folder in sorted(bases.iterdir()):
        try:
            generation = generation_from(json.loads(read_regular(folder / layout.GENERATION_RECORD, MAX_MANIFEST_BYTES)))
        except (OSError, ValueError, RecursionError, SnapshotError):
            continue
        if all((folder / name).is_file() for name in generation.files):
            manifest.generations.append(generation)
    manifest.generations.sort(key=lambda g: g.created)
    for generation in manifest.generations:
        if manifest.range_for(generation) is None:
            manifest.wal.append(_scan_range(settings, generation))
        folder = layout.wal_dir(settings, generation.system_identifier)
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            entry = f"{generation.system_identifier}/{name[:-3]}"
            if name.endswith(".history.gz") and layout.is_history(name[:-3]) and entry not in manifest.history:
                manifest.history.append(entry)
    return manifest if manifest.generations else None


def _scan_range(settings: Settings, generation: Generation) -> WalRange:
    folder = layout.wal_dir(settings, generation.system_identifier)
    wal_range = WalRange(generation.system_identifier, generation.timeline, generation.segment_size,
                         generation.start_segment, generation.start_segment - 1)
    while (folder / layout.wal_piece(wal_range.name(wal_range.last + 1))).is_file():
        wal_range.last += 1
    return wal_range


# --- checking what was read ----------------------------------------------------------------

def generation_from(data: object) -> Generation:
    """A generation record (in the manifest or a generation.json); SnapshotError if it is not one."""
    generation = _record_of(Generation, data)
    where = f"generation {generation.id!r}"
    layout.parse_generation(generation.id)
    _check_database(where, generation.system_identifier, generation.timeline, generation.segment_size)
    layout.parse_lsn(generation.start_lsn)
    layout.parse_lsn(generation.end_lsn)
    if generation.start_segment < 0 or generation.wal_bytes < 0:
        raise SnapshotError(f"{where} has a negative position or size", _REFUSED_HINT)
    for name, size in generation.files.items():
        if not layout.is_plain_name(name) or size < 0:
            raise SnapshotError(f"{where} names a piece {name!r} of {size} bytes", _REFUSED_HINT)
    return generation


def _wal_range_from(data: object) -> WalRange:
    wal_range = _record_of(WalRange, data)
    where = f"the WAL range of {wal_range.system_identifier!r}"
    _check_database(where, wal_range.system_identifier, wal_range.timeline, wal_range.segment_size)
    if wal_range.first < 0 or wal_range.last < wal_range.first - 1 or min(wal_range.bytes, wal_range.partial_bytes) < 0:
        raise SnapshotError(f"{where} runs from {wal_range.first} to {wal_range.last}", _REFUSED_HINT)
    if wal_range.partial is not None and wal_range.partial != wal_range.last + 1:
        raise SnapshotError(f"{where} has an unfinished segment {wal_range.partial} after {wal_range.last}", _REFUSED_HINT)
    return wal_range


def _check_database(where: str, system_identifier: str, timeline: int, segment_size: int) -> None:
    if not layout.is_system_identifier(system_identifier):
        raise SnapshotError(f"{where} names the database {system_identifier!r}", _REFUSED_HINT)
    if not 1 <= timeline < 2**32:
        raise SnapshotError(f"{where} is on timeline {timeline}", _REFUSED_HINT)
    if not (2**20 <= segment_size <= 2**30 and segment_size & (segment_size - 1) == 0):
        raise SnapshotError(f"{where} has WAL segments of {segment_size} bytes", _REFUSED_HINT)


def _history_entry(data: object) -> str:
    entry = _expect(data, str, "a history entry")
    system_identifier, _, name = entry.partition("/")
    if not (layout.is_system_identifier(system_identifier) and layout.is_history(name)):
        raise SnapshotError(f"the history entry {entry!r} is not <database>/<timeline>.history", _REFUSED_HINT)
    return entry


_Record = typing.TypeVar("_Record", Generation, WalRange)


def _record_of(kind: type[_Record], data: object) -> _Record:
    """`kind` built from a JSON object whose fields are exactly `kind`'s, each of its declared type."""
    what = kind.__name__
    record = _expect(data, dict, f"a {what}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    hints = typing.get_type_hints(kind)
    unknown = set(record) - set(fields)
    missing = {name for name, f in fields.items() if name not in record and f.default is dataclasses.MISSING}
    if unknown or missing:
        raise SnapshotError(f"a {what} record has unknown fields {sorted(unknown)} and lacks {sorted(missing)}", _REFUSED_HINT)
    values = {name: _typed(value, hints[name], f"{what}.{name}") for name, value in record.items()}
    return kind(**values)


def _typed(value: object, hint: Any, where: str) -> Any:
    if hint is str:
        return _expect(value, str, where)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SnapshotError(f"{where} is {value!r}, not a whole number", _REFUSED_HINT)
        return value
    if hint is float:
        return _number(value, where)
    if isinstance(hint, types.UnionType) and set(typing.get_args(hint)) == {int, type(None)}:
        return None if value is None else _typed(value, int, where)
    if typing.get_origin(hint) is dict:
        return {_expect(k, str, where): _typed(v, int, f"{where}[{k!r}]") for k, v in _expect(value, dict, where).items()}
    raise TypeError(f"no check for {hint!r}")  # a field type added without its check


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SnapshotError(f"{where} is {value!r}, not a number", _REFUSED_HINT)
    return float(value)


_T = typing.TypeVar("_T")


def _expect(value: object, kind: type[_T], where: str) -> _T:
    if not isinstance(value, kind):
        raise SnapshotError(f"{where} is {type(value).__name__}, not {kind.__name__}", _REFUSED_HINT)
    return value
