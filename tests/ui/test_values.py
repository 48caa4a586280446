"""The value reader and its worker on hand-made blobs: what a locked-in worker shows, what it
refuses, that it has no network, and what a worker that cannot drop privileges still shows
(plain data only)."""

from __future__ import annotations

import asyncio
import gzip
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mfcolab.ui import values
from mfcolab.ui.datastore import DatastoreRoots
from mfcolab.ui.values import Blob, Shown, ValueReader


class Writes:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, ...]:
        return (exec, (f"open({self.target!r}, 'w').write('x')",))


def _store(root: Path, sha: str, payload: bytes) -> Blob:
    folder = root / ".metaflow" / "Flow" / "data" / sha[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / sha).write_bytes(gzip.compress(payload))
    return Blob(root / ".metaflow", "Flow", sha)


def _show(root: Path, blobs: list[Blob | None], mode: str = "text") -> list[Shown]:
    async def show() -> list[Shown]:
        reader = ValueReader(DatastoreRoots(root))
        try:
            return await reader.show(blobs, mode)
        finally:
            await reader.close()

    return asyncio.run(show())


def test_values_errors_and_limits(tmp_path: Path) -> None:
    root = tmp_path / "datastore"
    target = tmp_path / "written"
    shown = _show(root, [
        _store(root, "aa01", pickle.dumps({"k": [1, 2]})),
        _store(root, "aa02", pickle.dumps(Writes(str(target)))),
        _store(root, "aa03", b"\x00" * (values.VALUE_MAX + 1)),  # unpacks past the limit
        _store(root, "aa04", b"not a pickle"),
        Blob(root / ".metaflow", "Flow", "aa05"),  # no such blob
        Blob(root / ".metaflow", "Flow", "../../escape"),
        None,
    ])
    assert shown[0] == Shown(content="{'k': [1, 2]}")
    assert [s.error_id for s in shown[1:]] == [
        "artifact-handle-failed", "artifact-too-large", "artifact-handle-failed", "DataException", "DataException",
        "DataException"]
    assert not target.exists()
    assert _show(root, [_store(root, "aa06", pickle.dumps({"a": 1}))], mode="json") == [Shown(content='{"a": 1}')]


def test_a_worker_that_cannot_drop_privileges_shows_plain_data_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a non-root mfcolab gets: no chroot, no user switch, a restricted unpickler."""
    monkeypatch.setattr(values, "viewer_ids", lambda: (-1, -1))
    root = tmp_path / "datastore"
    target = tmp_path / "written"
    import datetime

    plain, hostile = _show(root, [
        _store(root, "bb01", pickle.dumps({"when": datetime.date(2020, 1, 2), "s": {1}})),
        _store(root, "bb02", pickle.dumps(Writes(str(target)))),
    ])
    assert plain.content == "{'when': datetime.date(2020, 1, 2), 's': {1}}"
    assert hostile.error_id == "artifact-handle-failed" and "not plain data" in (hostile.detail or "")
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the lock-in needs root")
def test_a_locked_in_worker_runs_as_the_viewer_user_in_an_empty_root(tmp_path: Path) -> None:
    class Probe:
        def __reduce__(self) -> tuple[object, ...]:
            return (eval, ("(__import__('os').getuid(), __import__('os').listdir('/'))",))

    root = tmp_path / "datastore"
    [shown] = _show(root, [_store(root, "cc01", pickle.dumps(Probe()))])
    uid, _gid = values.viewer_ids()
    assert uid != 0
    assert shown.content == f"({uid}, [])", shown  # the viewer user, and a filesystem with nothing in it


def _jail_that_can_import(jail: Path, module: str) -> Path:
    """An empty root holding just the files that importing `module` loads in a worker (on
    Colab a preloaded package such as pandas brings the socket module along)."""
    worker_imports = "import gzip, importlib, io, json, os, pickle, pickletools, resource, sys"
    listing = subprocess.run(
        [sys.executable, "-I", "-c", f"{worker_imports}\nbefore = set(sys.modules)\nimport {module}\n"
         "print('\\n'.join(getattr(sys.modules[m], '__file__', None) or '' for m in set(sys.modules) - before))"],
        capture_output=True, text=True, check=True).stdout
    for name in filter(None, listing.splitlines()):
        target = jail / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(name, target)
    for folder in [jail, *jail.rglob("*")]:
        folder.chmod(0o755 if folder.is_dir() else 0o644)
    return jail


@pytest.mark.skipif(os.geteuid() != 0, reason="the lock-in needs root")
def test_a_locked_in_worker_cannot_reach_the_network(tmp_path: Path) -> None:
    """A value whose unpickling connects to a listener on 127.0.0.1 gets an error entry and the
    listener sees nothing. The worker's root holds the socket module, so only the network
    namespace stands in the way."""
    root = tmp_path / "datastore"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]

        class Connects:
            def __reduce__(self) -> tuple[object, ...]:
                return (exec, (f"import socket\nsocket.socket().connect(('127.0.0.1', {port}))",))

        reader = ValueReader(DatastoreRoots(root))
        reader._jail = str(_jail_that_can_import(tmp_path / "jail", "socket"))

        async def show() -> list[Shown]:
            try:
                return await reader.show([_store(root, "dd01", pickle.dumps(Connects()))])
            finally:
                await reader.close()

        [shown] = asyncio.run(show())
        assert shown.error_id == "artifact-handle-failed", shown
        assert "OSError" in (shown.detail or ""), shown  # the connection failed; the import worked
        with pytest.raises(BlockingIOError):  # the worker has exited: a connection made would be queued
            listener.accept()


def test_a_worker_that_keeps_the_network_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Where the kernel refuses a network namespace, the first worker's report is logged, once."""
    reader = ValueReader(DatastoreRoots(tmp_path))
    with caplog.at_level("WARNING", logger=values.__name__):
        for line in (b'{"network": null}\n', b'{"network": "unshare(CLONE_NEWNET): [Errno 1] nope"}\n',
                     b'{"network": "unshare(CLONE_NEWNET): [Errno 1] nope"}\n', b""):
            reader._note_network(line)
    assert [r.getMessage() for r in caplog.records] == [
        "artifact values: the viewer process keeps network access (unshare(CLONE_NEWNET): [Errno 1] nope); "
        f"it still runs as {values.VIEWER_USER} in an empty root with no file writes"]


def test_values_asked_for_while_they_load_share_one_worker(tmp_path: Path) -> None:
    """As on the run page: the DAG and the parameters are asked for at once; the first request
    starts one worker for both, the second waits for it; asked again, both come from the cache."""
    class Counting(ValueReader):
        workers = 0

        async def _run_worker(self, *args: Any) -> int:
            self.workers += 1
            return await super()._run_worker(*args)

    root = tmp_path / "datastore"
    graph, parameter = _store(root, "ee01", pickle.dumps({"start": ["end"]})), _store(root, "ee02", pickle.dumps(7))
    reader = Counting(DatastoreRoots(root))

    async def page() -> list[list[Shown]]:
        try:
            reader.prefetch([(graph, "json"), (parameter, "text")])
            first = await asyncio.gather(reader.show_each([(graph, "json")]), reader.show_each([(parameter, "text")]))
            again = await asyncio.gather(reader.show_each([(graph, "json")]), reader.show([parameter]))
            return [*first, *again]
        finally:
            await reader.close()

    shown = asyncio.run(page())
    assert shown == [[Shown(content='{"start": ["end"]}')], [Shown(content="7")]] * 2
    assert reader.workers == 1
