"""Helpers shared by the tests: free ports, bounded waits, settings in temporary folders, a real Postgres."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiohttp import web

from mfcolab.postgres import Postgres
from mfcolab.settings import Settings


def free_port() -> int:
    """A free 127.0.0.1 port below the kernel's range for outgoing connections, so that no client
    socket of the suite takes it before the process it is meant for binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(20000, low), min(200, max(0, low - 20000))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # an unusual range: any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def processes_below(folder: Path) -> dict[int, bytes]:
    """Live processes (pid: command line) whose command line names `folder` or whose working
    folder is inside it: a stack started there (supervisor, Postgres, web, UI backend), flows run there."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if state != "Z" and (str(folder).encode() in cmdline or cwd.startswith(str(folder))):
            found[int(entry)] = cmdline
    return found


def returned_or_raised(call: Callable[[], object], fifo: Path, wait: float = 60.0) -> object:
    """What `call` returned or raised; an AssertionError if it was still waiting on the FIFO `fifo`
    after `wait` seconds (the FIFO is then opened for writing and closed, so that the reader gets
    an end of file and the test goes on)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the test's thread
            box["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(wait)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(wait)
        raise AssertionError(f"the reader waited on the FIFO {fifo}")
    return box["value"]


def make_settings(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "root": tmp / "root", "local": tmp / "local", "port": free_port(), "pg_port": free_port(), "tunnel": False,
    }
    values.update(overrides)
    return Settings.resolve(**values)


def start_postgres(settings: Settings, password: str = "test-password") -> Postgres:
    pg = Postgres(settings, password)
    pg.start()
    wait_until(pg.healthy, timeout=60, what="postgres to accept connections")
    return pg


class AppThread:
    """An aiohttp application on 127.0.0.1, served by its own event loop in a thread."""

    def __init__(self, build: Callable[[], web.Application]) -> None:
        self.build = build
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="ui-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the application did not start within 60 s")
        if self._error is not None:
            raise RuntimeError(f"the application failed to start: {self._error}")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.build(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


class ServedInThread:
    """A ThreadingHTTPServer on a free 127.0.0.1 port, served from a daemon thread until close()."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> int:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
