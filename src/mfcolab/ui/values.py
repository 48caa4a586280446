"""Artifact values for the UI: read the blob in place, unpickle it in a locked-in worker.

A value is content-addressed (its sha names its blob), so a shown value never changes and
results are kept in a small in-process cache keyed by (sha, mode). The web process reads
each blob itself (`datastore.py`: in place, inside the datastore only) and hands the bytes
to `value_worker.py`, which runs as the unprivileged viewer user in an empty chroot, with a
memory, CPU and no-file-writes limit, and without network (its own network namespace; where
the kernel refuses one, the log says so once and values are still shown); a value that takes
longer than `VALUE_SECONDS` gets the worker killed and an error entry, and the rest of the
batch goes to a new worker. A value being loaded is not loaded twice: a request that asks for
it meanwhile waits for the same worker (the run page asks for its DAG and its parameters at
once; `artifacts.py` starts one worker for both).

Results are `Shown(content=...)` or `Shown(error_id=..., detail=...)`, the contract's
`postprocess_error` ids: `artifact-too-large`, `artifact-handle-failed`, `DataException`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..service.http import ApiError
from .datastore import DatastoreRoots

log = logging.getLogger(__name__)

VIEWER_USER = "mfcolab-view"
BLOB_MAX = 4 * 1024 * 1024  # a stored (compressed) blob larger than this is not read
VALUE_MAX = 16 * 1024 * 1024  # nor a value whose pickle unpacks to more than this
VALUE_SECONDS = 10.0  # wall-clock limit per value
WORKER_MEMORY = 2 * 1024 * 1024 * 1024  # address space of the worker (numpy/pandas need room)
WORKER_CPU_SECONDS = 60
CACHE_ENTRIES = 2048
WORKERS_AT_ONCE = 4  # more requests for values wait: a flood of them cannot fork without bound
LINE_MAX = 8 * 1024 * 1024
CLOSE_SECONDS = 1.0  # at shutdown, what a worker reading its last lines is given before it is stopped
Key = tuple[str, str, str]  # (flow_id, sha, mode): a value is content-addressed
# Run as a script, not as a module of this package: importing the package would load the
# whole web application (aiohttp, asyncpg) into every worker.
WORKER = Path(__file__).with_name("value_worker.py")


@dataclass(frozen=True, slots=True)
class Shown:
    content: str | None = None
    error_id: str | None = None
    detail: str | None = None
    lasting: bool = True  # False for a timeout or a crash: the next try may succeed

    @property
    def ok(self) -> bool:
        return self.error_id is None


@dataclass(frozen=True, slots=True)
class Blob:
    """Where a value is stored: `<root>/<flow>/data/<sha[:2]>/<sha>` in a local datastore."""

    root: Path
    flow_id: str
    sha: str


def viewer_ids() -> tuple[int, int]:
    """(uid, gid) of the viewer user, created on first use; (-1, -1) when not running as root."""
    if os.geteuid() != 0:
        return -1, -1
    try:
        entry = pwd.getpwnam(VIEWER_USER)
    except KeyError:
        if shutil.which("useradd") is None:
            return -1, -1
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", VIEWER_USER],
                       capture_output=True, check=False)
        try:
            entry = pwd.getpwnam(VIEWER_USER)
        except KeyError:
            return -1, -1
    return entry.pw_uid, entry.pw_gid


class ValueReader:
    def __init__(self, roots: DatastoreRoots) -> None:
        self.roots = roots
        self._cache: OrderedDict[Key, Shown] = OrderedDict()
        self._jail: str | None = None
        self._ids: tuple[int, int] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._network_reported = False
        self._loading: dict[Key, asyncio.Future[Shown]] = {}
        self._batches: set[asyncio.Task[None]] = set()

    async def show(self, blobs: list[Blob | None], mode: str = "text") -> list[Shown]:
        """The value of each blob (None: no blob recorded), in order."""
        return await self.show_each([(blob, mode) for blob in blobs])

    async def show_each(self, items: list[tuple[Blob | None, str]]) -> list[Shown]:
        """The value of each (blob, mode), in order; returns once the worker it started, if any, is gone."""
        known, batch = self._start(items)
        shown = [value if isinstance(value, Shown) else await asyncio.shield(value) for value in known]
        if batch is not None:
            await asyncio.shield(batch)
        return shown

    def prefetch(self, items: list[tuple[Blob | None, str]]) -> list[Shown | asyncio.Future[Shown]]:
        """Start loading every value not known yet, all in one worker, in the order given (a
        value that another request is loading already is not loaded again); do not wait.
        Returns what is known of each: its value, or the future that will hold it."""
        return self._start(items)[0]

    def _start(self, items: list[tuple[Blob | None, str]]) -> tuple[list[Shown | asyncio.Future[Shown]], asyncio.Task[None] | None]:
        known: list[Shown | asyncio.Future[Shown]] = []
        batch: list[tuple[Key, bytes, bool]] = []
        for blob, mode in items:
            if blob is None:
                known.append(Shown(error_id="DataException", detail="no value is stored for this artifact"))
                continue
            key = (blob.flow_id, blob.sha, mode)
            seen = self._cache.get(key) or self._loading.get(key)
            if seen is not None:
                known.append(seen)
                continue
            loaded = self._load(blob)
            if isinstance(loaded, Shown):
                known.append(loaded)
                continue
            self._loading[key] = asyncio.get_running_loop().create_future()
            known.append(self._loading[key])
            batch.append((key, *loaded))
        if not batch:
            return known, None
        task = asyncio.get_running_loop().create_task(self._load_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        return known, task

    async def _load_batch(self, batch: list[tuple[Key, bytes, bool]]) -> None:
        def deliver(index: int, shown: Shown) -> None:
            self._remember(batch[index][0], shown)
            self._settle(batch[index][0], shown)

        try:
            await self._run([(data, raw, key[2]) for key, data, raw in batch], deliver)
        finally:  # stopped part-way (cancelled at shutdown): nobody waits forever
            for key, _, _ in batch:
                self._settle(key, _failed("the viewer stopped before loading this value"))

    def _settle(self, key: Key, shown: Shown) -> None:
        future = self._loading.pop(key, None)
        if future is not None and not future.done():
            future.set_result(shown)

    def _load(self, blob: Blob) -> tuple[bytes, bool] | Shown:
        try:
            path = self.roots.path(blob.root, blob.flow_id, "data", blob.sha[:2], blob.sha)
        except ApiError:
            return Shown(error_id="DataException", detail="the artifact's location is not a datastore path")
        size = self.roots.size(path)
        if size is None:
            return Shown(error_id="DataException", detail=f"the stored value {blob.sha} is not in the datastore")
        if size > BLOB_MAX:
            return Shown(error_id="artifact-too-large", detail=f"the stored value is {size} bytes; values over {BLOB_MAX} are not shown")
        data = self.roots.read(path, BLOB_MAX)
        if data is None:
            return Shown(error_id="DataException", detail=f"the stored value {blob.sha} cannot be read")
        return data, _is_raw(self.roots, path.with_name(blob.sha + "_meta"))

    def _remember(self, key: Key, shown: Shown) -> None:
        if not shown.lasting:
            return
        self._cache[key] = shown
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def _run(self, batch: list[tuple[bytes, bool, str]], deliver: Callable[[int, Shown], None]) -> None:
        """Every value of `batch` (data, raw, mode) to `deliver(index, shown)` as it comes."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(WORKERS_AT_ONCE)
        async with self._slots:
            done = 0
            while done < len(batch):
                done += await self._run_worker(batch[done:], functools.partial(_shifted, deliver, done))

    def _worker_args(self) -> list[str]:
        if self._ids is None:
            self._ids = viewer_ids()
        if self._jail is None:
            self._jail = tempfile.mkdtemp(prefix="mfcolab-view-jail-")
            os.chmod(self._jail, 0o555)
        uid, gid = self._ids
        return [self._jail, str(uid), str(gid), str(WORKER_MEMORY), str(WORKER_CPU_SECONDS), str(VALUE_MAX)]

    async def _run_worker(self, batch: list[tuple[bytes, bool, str]], deliver: Callable[[int, Shown], None]) -> int:
        """Run one worker over `batch`; how many values it delivered (at least one: the one that failed)."""
        header = {"jobs": [{"size": len(data), "raw": raw, "mode": mode} for data, raw, mode in batch]}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(WORKER), *self._worker_args(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, limit=LINE_MAX, start_new_session=True,
        )
        delivered = 0

        def give(shown: Shown) -> None:
            nonlocal delivered
            deliver(delivered, shown)
            delivered += 1

        try:
            if proc.stdin is None or proc.stdout is None:
                raise OSError("the viewer was started without pipes")
            proc.stdin.write(json.dumps(header).encode() + b"\n" + b"".join(data for data, _, _ in batch))
            await proc.stdin.drain()
            proc.stdin.close()
            self._note_network(await asyncio.wait_for(proc.stdout.readline(), VALUE_SECONDS))
            while delivered < len(batch):
                line = await asyncio.wait_for(proc.stdout.readline(), VALUE_SECONDS)
                if not line:
                    give(_failed("the viewer stopped while loading this value"))
                    break
                give(_parse(line))
        except TimeoutError:
            give(_failed(f"the viewer took more than {VALUE_SECONDS:.0f} s to load this value"))
        except (ValueError, OSError) as exc:  # an over-long line, a broken pipe
            give(_failed(f"the viewer failed while loading this value: {exc}"))
        finally:
            if proc.returncode is None:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
            await proc.wait()
        return delivered

    def _note_network(self, line: bytes) -> None:
        """The worker's first line: whether it could take its own network away (logged once)."""
        try:
            reason = json.loads(line).get("network") if line else None
        except (ValueError, AttributeError):
            reason = None
        if reason and not self._network_reported:
            self._network_reported = True
            log.warning("artifact values: the viewer process keeps network access (%s); it still runs as %s "
                        "in an empty root with no file writes", str(reason)[:200], VIEWER_USER)

    async def close(self) -> None:
        """Let the workers still running finish (a moment), stop the others, remove the empty root."""
        if self._batches:
            _, stuck = await asyncio.wait(self._batches, timeout=CLOSE_SECONDS)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._jail is not None:
            try:
                os.rmdir(self._jail)
            except OSError:
                pass
            self._jail = None


def _shifted(deliver: Callable[[int, Shown], None], offset: int, index: int, shown: Shown) -> None:
    deliver(offset + index, shown)


def _failed(detail: str) -> Shown:
    return Shown(error_id="artifact-handle-failed", detail=detail, lasting=False)


def _parse(line: bytes) -> Shown:
    try:
        doc = json.loads(line)
    except ValueError:
        return Shown(error_id="artifact-handle-failed", detail="the viewer answered something that is not JSON")
    if not isinstance(doc, dict):
        return Shown(error_id="artifact-handle-failed", detail="the viewer answered something that is not an object")
    if isinstance(doc.get("content"), str):
        return Shown(content=doc["content"])
    return Shown(error_id=str(doc.get("error") or "artifact-handle-failed"), detail=str(doc.get("detail") or "")[:2000])


def _is_raw(roots: DatastoreRoots, meta_path: Path) -> bool:
    """A blob's `_meta` file says whether it is stored raw (else gzip, the usual case)."""
    size = roots.size(meta_path)
    text = roots.read(meta_path, 4096) if size is not None and size <= 4096 else None
    if not text:
        return False
    try:
        return bool(json.loads(text).get("cas_raw", False))
    except (ValueError, AttributeError):
        return False
