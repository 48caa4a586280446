"""What the official UI backend sees of the datastore: a copy it can read and cannot change.

Upstream's UI backend `shutil.move`s a task's log files out of a local datastore the first
time they are viewed, and unpickles artifacts that any notebook sharing the root folder may
have written. So the real datastore is never bound into its container. Instead:

- the view: `<local>/datastore-view`, a copy of the datastore kept up to date by `ViewSync` (in
  the supervisor, as the user mfcolab runs as), bound at the datastore's own path inside the
  container so the absolute locations the runs recorded resolve. Files are copied once (a
  changed size or mtime copies again; nothing is ever deleted from either side) and made
  0644/0755: readable by the container user, writable by nobody but mfcolab. On Colab the
  Drive files are root 0600, so the unprivileged container user could not read them in place.
- the shim: a `sitecustomize` module, bound read-only into the container, that turns a
  `shutil.move` out of the datastore into a copy. Without it the move would fail on the view's
  permissions and the log request would fail with it.

`docs/official-images.md` weighs this against a read-only bind and a shim alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat
import threading
from pathlib import Path

from ..sharedfile import open_regular

log = logging.getLogger(__name__)

SHIM_DIR = "/opt/mfcolab"  # where the shim folder appears inside the container (PYTHONPATH)
SHIM_ROOT_ENV = "MFCOLAB_DATASTORE_ROOT"
FILE_MODE, DIR_MODE = 0o644, 0o755
# The module the container's Python imports at startup (before upstream's code).
SHIM = '''"""mfcolab: a move out of the datastore is a copy; the datastore is never changed."""
import os
import shutil

_ROOT = os.path.realpath(os.environ.get("MFCOLAB_DATASTORE_ROOT", "") or "/nonexistent") + os.sep
_move = shutil.move


def _inside_datastore(path):
    try:
        return os.path.realpath(os.fspath(path)).startswith(_ROOT)
    except (TypeError, ValueError):
        return False


def move(src, dst, *args, **kwargs):
    if _inside_datastore(src):
        return shutil.copy2(src, dst)
    return _move(src, dst, *args, **kwargs)


shutil.move = move
'''


@dataclasses.dataclass(frozen=True)
class SyncResult:
    files: int = 0  # copied this time
    bytes: int = 0
    seen: int = 0  # files in the datastore


def sync_view(source: Path, view: Path) -> SyncResult:
    """Copy into `view` every file of `source` that is missing there or differs in size or mtime.

    Reads `source` only. Symlinks are not followed (a shared folder is hostile: a link could
    point anywhere on this machine). A file that vanishes or cannot be read is skipped and
    tried again next time.
    """
    copied = size = seen = 0
    _make_dir(view)
    for folder, dirs, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        target_dir = view / relative
        _make_dir(target_dir)
        dirs[:] = [name for name in dirs if not Path(folder, name).is_symlink()]
        for name in files:
            origin = Path(folder, name)
            try:
                info = origin.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            seen += 1
            target = target_dir / name
            if _same(info, target):
                continue
            if _copy(origin, target, info):
                copied += 1
                size += info.st_size
    return SyncResult(copied, size, seen)


def _same(info: os.stat_result, target: Path) -> bool:
    try:
        have = target.stat()
    except OSError:
        return False
    return have.st_size == info.st_size and have.st_mtime_ns == info.st_mtime_ns


def _copy(origin: Path, target: Path, info: os.stat_result) -> bool:
    staging = target.with_name(f".{target.name}.mfcolab-tmp")
    try:
        with open_regular(origin) as reader, open(staging, "wb") as writer:  # swapped for a link or FIFO since: refused
            shutil.copyfileobj(reader, writer, 1024 * 1024)
        os.chmod(staging, FILE_MODE)
        os.utime(staging, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(staging, target)
    except OSError as exc:
        log.warning("datastore view: could not copy %s (%s); trying again later", origin, exc)
        staging.unlink(missing_ok=True)
        return False
    return True


def _make_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        path.chmod(DIR_MODE)


def write_shim(folder: Path) -> Path:
    """The shim module in `folder` (bound at SHIM_DIR), readable by everyone, writable by mfcolab only."""
    _make_dir(folder)
    path = folder / "sitecustomize.py"
    if not path.is_file() or path.read_text() != SHIM:
        staging = path.with_suffix(".tmp")
        staging.write_text(SHIM)
        staging.chmod(FILE_MODE)
        staging.replace(path)
    return folder


class ViewSync:
    """Keeps the view current while the UI backend runs: one sync now, then one every `interval` s."""

    def __init__(self, source: Path, view: Path, interval: float = 2.0) -> None:
        self.source, self.view, self.interval = source, view, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sync(self) -> SyncResult:
        if not self.source.is_dir():
            _make_dir(self.view)
            return SyncResult()
        result = sync_view(self.source, self.view)
        if result.files:
            log.info("datastore view: copied %d file(s), %.1f MB", result.files, result.bytes / 1e6)
        return result

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="datastore view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception:  # a failed cycle must not end the sync; the next one retries
                log.exception("datastore view: sync failed")
