"""A pull's progress, from what udocker writes while it pulls: the manifest first, then one file per
layer. PullWatcher reports it to a callback a few times a second; print_progress is the plain
display (one line per tenth of the download)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PullProgress:
    image: str
    done: int  # bytes on disk
    total: int  # bytes in the manifest (0 until the manifest arrived)
    layers_done: int
    layers_total: int
    finished: bool = False


ProgressCallback = Callable[[PullProgress], None]


class PullWatcher:
    """Reports a pull's progress from what udocker writes: the manifest first, then one file per layer."""

    def __init__(self, image: str, manifest: Path, layers: Path, callback: ProgressCallback, interval: float = 0.2) -> None:
        self.image = image
        self.manifest = manifest
        self.layers = layers
        self.callback = callback
        self.interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pull {image}", daemon=True)
        self._last: PullProgress | None = None

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self._done.set()
        self._thread.join(5)
        final = self._measure()
        self._emit(dataclasses.replace(final, finished=True))

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._emit(self._measure())

    def _measure(self) -> PullProgress:
        manifest = read_json(self.manifest)
        blobs = manifest_blobs(manifest) if manifest else []
        sizes = [min(_size(self.layers / digest), size) for digest, size in blobs]
        return PullProgress(
            image=self.image, done=sum(sizes), total=sum(size for _, size in blobs),
            layers_done=sum(1 for (_, size), got in zip(blobs, sizes, strict=True) if got == size), layers_total=len(blobs),
        )

    def _emit(self, progress: PullProgress) -> None:
        if progress != self._last:
            self._last = progress
            try:
                self.callback(progress)
            except Exception:  # a display must never break a pull
                log.exception("pull progress display failed")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def manifest_blobs(manifest: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(digest, size) of every blob udocker downloads for a schema-2 or OCI manifest: layers and config."""
    entries = list(manifest.get("layers") or [])
    config = manifest.get("config")
    if isinstance(config, dict) and config.get("digest") and config not in entries:
        entries.append(config)
    return [(str(entry["digest"]), int(entry.get("size", 0))) for entry in entries if isinstance(entry, dict)
            and "digest" in entry]


def print_progress(stream: Any = None) -> ProgressCallback:
    """A plain progress display: one line per tenth of the download (and one at the end)."""
    out = stream or sys.stderr
    shown: dict[str, int] = {}

    def show(progress: PullProgress) -> None:
        if not progress.total:
            return
        step = progress.done * 10 // progress.total
        if progress.finished or shown.get(progress.image, -1) < step:
            shown[progress.image] = step
            out.write(f"pulling {progress.image}: {progress.done / 1e6:.1f} of {progress.total / 1e6:.1f} MB, "
                      f"layer {progress.layers_done} of {progress.layers_total}{' done' if progress.finished else ''}\n")
            out.flush()

    return show
