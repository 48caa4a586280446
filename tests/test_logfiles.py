"""Log files: created 0600, rotated by size under a child that keeps writing, and one traceback for
an error repeated many times (a real front door answering a real failing route)."""

from __future__ import annotations

import io
import logging
import sys
import time
from pathlib import Path

import requests
from aiohttp import web

from frontdoor_helpers import KEY, ServerThread
from helpers import wait_until
from mfcolab.logfiles import open_log, quiet_repeated_errors, rotate_if_large
from mfcolab.supervisor.process import ManagedProcess
from mfcolab.web.frontdoor import create_app

WRITER = "import sys, time\nfor i in range(100000):\n    print('line', i, 'x' * 200, flush=True)\n    time.sleep(0.001)\n"


def test_a_log_is_created_private_and_made_private(tmp_path: Path) -> None:
    old = tmp_path / "old.log"
    old.write_text("from before\n")
    old.chmod(0o644)
    for path in (tmp_path / "new.log", old):
        with open_log(path) as out:
            out.write(b"x\n")
        assert path.stat().st_mode & 0o777 == 0o600
    assert old.read_text() == "from before\nx\n"


def test_rotation_under_a_child_that_keeps_writing(tmp_path: Path) -> None:
    log_path = tmp_path / "web.log"
    child = ManagedProcess("writer", [sys.executable, "-c", WRITER], log_path)
    child.spawn()
    try:
        wait_until(lambda: log_path.stat().st_size > 64 * 1024, timeout=60, what="the child to write 64 KiB")
        assert rotate_if_large(log_path, max_bytes=32 * 1024, backups=2)
        first = log_path.with_name("web.log.1")
        assert first.stat().st_size > 32 * 1024 and first.stat().st_mode & 0o777 == 0o600
        assert log_path.stat().st_size < first.stat().st_size
        wait_until(lambda: log_path.stat().st_size > 64 * 1024, timeout=60, what="more lines after the rotation")
        assert rotate_if_large(log_path, max_bytes=32 * 1024, backups=2)
        wait_until(lambda: log_path.stat().st_size > 64 * 1024, timeout=60, what="more lines after the rotation")
        assert rotate_if_large(log_path, max_bytes=32 * 1024, backups=2)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["web.log", "web.log.1", "web.log.2"], "older copies beyond the backups are dropped"
        assert not log_path.read_bytes().startswith(b"\x00"), "the child writes at the new end, not at its old offset"
        assert child.alive()
    finally:
        child.stop(5)
    assert not rotate_if_large(log_path, max_bytes=10 * 2**20)


def test_a_repeated_error_writes_one_traceback(tmp_path: Path) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("the same failure every time")

    service = web.Application()
    service.router.add_get("/broken", broken)
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    root = logging.getLogger()
    root.addHandler(handler)
    repeated = quiet_repeated_errors()
    servers = ServerThread()
    try:
        door = servers.serve(create_app(KEY, service))
        for _ in range(25):
            assert requests.get(f"{door}/metadata/broken", headers={"x-api-key": KEY}).status_code == 500
        time.sleep(0.1)
    finally:
        servers.close()
        root.removeHandler(handler)
        for each in root.handlers:
            each.removeFilter(repeated)
    text = output.getvalue()
    assert text.count("Traceback") == 1, text[:2000]
    assert text.count("its traceback is shown once a minute") == 24
