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
- a sync on demand: the shim asks for one (it touches `request` in a folder the container may
  write) when upstream's code reads a finished task the view does not have yet, and waits until
  a sync that began after its ask has finished (the time it began, in `synced` next to the shim).
- the shim: a `sitecustomize` module, bound read-only into the container, that turns a
  `shutil.move` out of the datastore into a copy. Without it the move would fail on the view's
  permissions and the log request would fail with it. It also keeps a task's metadata out of
  Metaflow's client cache unless it lists artifacts: the client would otherwise cache the empty
  stand-in it uses to size a task's logs (or a task the view does not have yet) and hide the
  task's artifacts from every later read.

`docs/official-images.md` weighs this against a read-only bind and a shim alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import threading
import time
from pathlib import Path

from ..files import read_chunks, write_atomic
from ..sharedfile import open_regular

log = logging.getLogger(__name__)

SHIM_DIR = "/opt/mfcolab"  # where the shim folder appears inside the container (PYTHONPATH)
SHIM_ROOT_ENV = "MFCOLAB_DATASTORE_ROOT"
REQUEST_DIR = "/opt/mfcolab-sync"  # where the folder the container asks for a sync in appears
REQUEST_FILE, SYNCED_FILE = "request", "synced"  # in the request folder; in the shim folder
REQUEST_ENV = "MFCOLAB_SYNC_REQUEST"  # the request file's path inside the container
FILE_MODE, DIR_MODE = 0o644, 0o755
# The module the container's Python imports at startup (before upstream's code).
SHIM = '''"""mfcolab: a move out of the datastore is a copy; Metaflow's reads of a task see its files."""
import importlib.abc
import os
import shutil
import sys
import time

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

# Metaflow's client keeps each task's metadata (its list of artifacts) in a disk cache shared by
# every process. It also stores there a task whose metadata it did not read: the empty stand-in
# it passes when it sizes the task's logs, and a task whose files are not (yet) in the view.
# Every later artifact read of that task then finds no artifacts (TypeError in
# get_artifact_sizes). A finished task always has artifacts, so metadata without any is not kept.
_FILECACHE = "metaflow.client.filecache"
_TASK_DATASTORE = "metaflow.datastore.task_datastore"
_SHIM_DIR = os.path.dirname(os.path.abspath(__file__))
_REQUEST = os.environ.get("MFCOLAB_SYNC_REQUEST", "")
_SYNCED = os.path.join(_SHIM_DIR, "synced")
_SYNC_WAIT = 60.0  # a walk of a large datastore on Drive can take a while; then the read fails as before


def _keep_only_metadata_with_artifacts(module):
    cls = getattr(module, "TaskMetadataCache", None)
    store = getattr(cls, "store_metadata", None)
    if store is None:
        return

    def store_metadata(self, run_id, step_name, task_id, attempt, metadata_dict):
        if isinstance(metadata_dict, dict) and metadata_dict.get("objects"):
            store(self, run_id, step_name, task_id, attempt, metadata_dict)

    cls.store_metadata = store_metadata


# The view lags the datastore by up to a sync interval. Upstream's backend reads a task's files
# only once the database lists its artifacts, so a task it cannot find in the view is one the view
# has not copied yet: ask for a sync, wait for it, read again. (Upstream caches a failed read.)
def _fresh_view():
    if not _REQUEST:
        return False
    asked = time.time()
    try:
        with open(_REQUEST, "a"):
            pass
        os.utime(_REQUEST)
    except OSError:
        return False
    deadline = time.monotonic() + _SYNC_WAIT
    while time.monotonic() < deadline:
        try:
            with open(_SYNCED) as handle:
                if float(handle.read()) >= asked:
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return False


def _argument(args, kwargs, position, name, default):
    return kwargs[name] if name in kwargs else args[position] if len(args) > position else default


def _reads_a_finished_task(args, kwargs):
    # TaskDataStore(flow_datastore, run_id, step_name, task_id, attempt, data_metadata, mode, allow_not_done, ...)
    return (_argument(args, kwargs, 6, "mode", "r") == "r" and _argument(args, kwargs, 5, "data_metadata", None) is None
            and not _argument(args, kwargs, 7, "allow_not_done", False))


def _read_again_after_a_sync(module):
    cls = getattr(module, "TaskDataStore", None)
    init = getattr(cls, "__init__", None)
    if init is None:
        return

    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except Exception as exc:  # DataException: no completed attempt (yet)
            if type(exc).__name__ != "DataException" or not _reads_a_finished_task(args, kwargs) or not _fresh_view():
                raise
            init(self, *args, **kwargs)
            return
        if not getattr(self, "_objects", True) and _reads_a_finished_task(args, kwargs) and _fresh_view():
            init(self, *args, **kwargs)

    cls.__init__ = __init__


_PATCHES = {_FILECACHE: _keep_only_metadata_with_artifacts, _TASK_DATASTORE: _read_again_after_a_sync}


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                load = spec.loader.exec_module

                def exec_module(module):
                    load(module)
                    patch(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


sys.meta_path.insert(0, _AfterImport())
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
    try:
        with open_regular(origin) as reader:  # swapped for a link or FIFO since: refused
            write_atomic(target, read_chunks(reader), FILE_MODE, durable=False)  # a copy: made again if lost
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    except OSError as exc:
        log.warning("datastore view: could not copy %s (%s); trying again later", origin, exc)
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
        write_atomic(path, [SHIM.encode()], FILE_MODE)
    return folder


class ViewSync:
    """Keeps the view current while the UI backend runs: one sync now, then one every `interval` s,
    and one as soon as the container asks (`request`, a file it may touch). After each sync the
    time it began is written to `synced` (a file the container may read, not change)."""

    def __init__(self, source: Path, view: Path, interval: float = 2.0, *, request: Path | None = None,
                 synced: Path | None = None, poll: float = 0.2) -> None:
        self.source, self.view, self.interval = source, view, interval
        self.request, self.synced, self.poll = request, synced, poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._asked = self._request_mtime()

    def sync(self) -> SyncResult:
        began = time.time()
        if not self.source.is_dir():
            _make_dir(self.view)
            result = SyncResult()
        else:
            result = sync_view(self.source, self.view)
        if result.files:
            log.info("datastore view: copied %d file(s), %.1f MB", result.files, result.bytes / 1e6)
        if self.synced is not None:
            write_atomic(self.synced, [repr(began).encode()], FILE_MODE, durable=False)
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

    def _asked_again(self) -> bool:
        mtime = self._request_mtime()
        if mtime == self._asked:
            return False
        self._asked = mtime
        return True

    def _request_mtime(self) -> int:
        try:
            return os.lstat(self.request).st_mtime_ns if self.request is not None else 0
        except OSError:
            return 0

    def _run(self) -> None:
        due = time.monotonic() + self.interval
        while not self._stop.wait(self.poll if self.request is not None else self.interval):
            if self.request is not None and not self._asked_again() and time.monotonic() < due:
                continue
            try:
                self.sync()
            except Exception:  # a failed cycle must not end the sync; the next one retries
                log.exception("datastore view: sync failed")
            due = time.monotonic() + self.interval
