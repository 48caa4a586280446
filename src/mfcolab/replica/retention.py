"""Which generations a root folder keeps, and deleting what none of them needs.

The newest `--keep` generations stay, with the WAL each needs from its base on. Everything else
(older bases, WAL before the oldest kept base, leftovers of interrupted writes) is deleted, but
only after the manifest that no longer names it has been written: a crash in between leaves
files nobody needs, never a manifest naming files that are gone.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import layout
from .manifest import Generation, Manifest, WalRange


def retained(manifest: Manifest, keep_count: int) -> tuple[Manifest, bool]:
    """The manifest with only the newest `keep_count` generations and the WAL they need;
    True if that dropped anything."""
    keep = manifest.generations[-keep_count:]
    if len(keep) == len(manifest.generations) and all(_needed(r, keep) for r in manifest.wal):
        return manifest, False
    trimmed = manifest.copy()
    trimmed.generations = trimmed.generations[-keep_count:]
    trimmed.wal = [r for r in trimmed.wal if _needed(r, trimmed.generations)]
    for wal_range in trimmed.wal:
        wal_range.first = min(g.start_segment for g in trimmed.generations if wal_range.covers_start(g))
    return trimmed, True


def sweep(snapshots_dir: Path, manifest: Manifest) -> None:
    """Delete what no kept generation needs. Base folders newer than the newest known
    generation are left alone (a base shipped just before a crash, named later)."""
    newest = manifest.newest()
    if newest is None:
        return
    kept = {g.id for g in manifest.generations}
    bases = snapshots_dir / "base"
    for folder in sorted(bases.iterdir()) if bases.is_dir() else []:
        if folder.name not in kept and folder.name < newest.id:
            _remove_folder(folder)
    wal_root = snapshots_dir / "wal"
    for folder in sorted(wal_root.iterdir()) if wal_root.is_dir() else []:
        ranges = [r for r in manifest.wal if r.system_identifier == folder.name]
        for name in os.listdir(folder):
            if not _wal_piece_needed(name, ranges):
                (folder / name).unlink(missing_ok=True)


def _needed(wal_range: WalRange, keep: list[Generation]) -> bool:
    return any(wal_range.covers_start(g) for g in keep)


def _wal_piece_needed(name: str, ranges: list[WalRange]) -> bool:
    if layout.is_temp(name):
        return False
    if name.endswith(".history.gz"):
        return True
    segment = name.split(".", 1)[0]
    if not layout.is_segment(segment) or not ranges:
        return bool(ranges)
    for wal_range in ranges:
        timeline, segno = layout.parse_segment(segment, wal_range.segment_size)
        if timeline != wal_range.timeline:
            continue
        if name.endswith(".partial.gz"):
            if wal_range.partial == segno:
                return True
        elif wal_range.first <= segno <= wal_range.last:
            return True
    return False


def _remove_folder(folder: Path) -> None:
    for name in os.listdir(folder):
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass
