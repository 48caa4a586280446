"""The GPU side's local relay: 127.0.0.1:<port> forwards to whatever URL <root>/connection.json names now.

A flow run keeps the service URL it started with, and a quick tunnel gets a new URL on every
restart. So `connect --watch` points the Metaflow profile at this relay instead of the tunnel:
the relay looks at connection.json again (one stat, at most every CHECK_INTERVAL seconds) and
sends each request to the current URL. While the tunnel is away (a connection error, or
Cloudflare's 530 for a hostname with no tunnel behind it) the relay answers 503 with a JSON
message; the Metaflow client retries 503 with backoff, so a run rides over the restart.

The access key is passed on as the client sent it, except that a key connection.json named
earlier is replaced by the one it names now: after `mfcolab rotate-key` on the CPU side, runs
that started with the old key keep working. A key the relay never read there is passed on
unchanged (and refused by the front door). The relay goes through the proxy the environment
names (HTTPS_PROXY), like any other client on the machine.

Files in the relay's folder: relay.json (pid, port, root; written by the relay once it listens,
removed when it stops) and relay.log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from ..credentials import read_connection, write_private
from ..errors import ConfigError, ConnectError, PortBusyError
from ..logfiles import open_log
from ..supervisor.component import require_free_port
from ..supervisor.process import pid_alive, stop_processes, tail_file
from ..web.auth import HEADER, json_error
from ..web.frontdoor import make_runner
from ..web.proxy import Forwarder, Upstream

log = logging.getLogger(__name__)

DEFAULT_PORT = 7861
CHECK_INTERVAL = 0.5  # seconds between looks at connection.json (a stat; Drive is a FUSE mount)
STATUS_PATH = "/_mfcolab/relay"  # the relay's own status; never forwarded
TUNNEL_GONE = frozenset({530})  # Cloudflare: no tunnel connected for this hostname (error 1033)
START_TIMEOUT = 20.0


class ConnectionSource:
    """The service URL published in <root>/connection.json, re-read when the file changes."""

    def __init__(self, root: Path, check_interval: float = CHECK_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.path = root / "connection.json"
        self.check_interval = check_interval
        self.clock = clock
        self.upstream: Upstream | None = None
        self.key: str | None = None  # the key connection.json names now
        self.earlier_keys: set[str] = set()
        self.problem = f"{self.path} has not been read yet"
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at: float | None = None

    def current(self, *, force: bool = False) -> Upstream | None:
        now = self.clock()
        if force or self._checked_at is None or now - self._checked_at >= self.check_interval:
            self._checked_at = now
            self._refresh()
        return self.upstream

    def _refresh(self) -> None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self.upstream, self._stamp = None, None
            self.problem = f"no {self.path}: the CPU side has not published a URL (is `mfcolab up` running there?)"
            return
        except OSError as exc:  # a hiccup of the shared folder: keep following the last URL
            self.problem = f"cannot read {self.path}: {exc.strerror}"
            return
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        try:
            record = read_connection(self.path.parent)
            if record is None:
                raise FileNotFoundError(self.path)
            upstream = Upstream(record["url"], "mfcolab service")
            key = record.get("key")
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            # Possibly caught mid-sync: leave the stamp unset so the next look reads it again.
            self.problem = f"{self.path} is unreadable ({exc.message if isinstance(exc, ConfigError) else type(exc).__name__})"
            return
        self._stamp = stamp
        if isinstance(key, str) and key and key != self.key:
            if self.key is not None:
                log.info("the access key in %s changed: sending the new one", self.path)
                self.earlier_keys.add(self.key)
            self.key = key
        if self.upstream is None or upstream.url != self.upstream.url:
            log.info("following %s", upstream.url)
        self.upstream, self.problem = upstream, ""


class Relay:
    """The relay's aiohttp application: its status at STATUS_PATH, everything else forwarded."""

    def __init__(self, root: Path, source: ConnectionSource | None = None) -> None:
        self.root = root
        self.source = source or ConnectionSource(root)
        self.forwarder = Forwarder(keep_key=True, trust_env=True, unreachable_status=503, gone_statuses=TUNNEL_GONE)
        self.forwarded = 0
        self.unavailable = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.cleanup_ctx.append(self.forwarder.session_context)
        app.router.add_get(STATUS_PATH, self.status)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app

    async def status(self, request: web.Request) -> web.Response:
        upstream = self.source.current()
        return web.json_response({
            "relay": "mfcolab", "pid": os.getpid(), "root": str(self.root),
            "upstream": upstream.url if upstream else None, "problem": self.source.problem,
            "forwarded": self.forwarded, "unavailable": self.unavailable,
        })  # fmt: skip

    async def forward(self, request: web.Request) -> web.StreamResponse:
        upstream = self.source.current()
        if upstream is None:
            self.unavailable += 1
            log.warning("503 for %s %s: %s", request.method, request.path, self.source.problem)
            return json_error(503, f"the mfcolab service is not available: {self.source.problem}")
        response = await self.forwarder.forward(self._with_current_key(request), upstream)
        if response.status == 503 and not response.prepared:
            self.unavailable += 1
            log.warning("503 for %s %s: %s is not answering (tunnel restarting?)", request.method, request.path, upstream.url)
            self.source.current(force=True)  # the next request goes to a new URL at once, if there is one
        else:
            self.forwarded += 1
        return response


    def _with_current_key(self, request: web.Request) -> web.Request:
        """The request with the key connection.json names now, when it carries one it named before."""
        sent, current = request.headers.get(HEADER), self.source.key
        if sent is None or current is None or sent == current or sent not in self.source.earlier_keys:
            return request
        headers = request.headers.copy()
        headers[HEADER] = current
        return request.clone(headers=headers)


# ---- running it -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayFolder:
    path: Path

    @property
    def state_file(self) -> Path:
        return self.path / "relay.json"

    @property
    def log_file(self) -> Path:
        return self.path / "relay.log"


def serve(root: Path, port: int, folder: RelayFolder) -> int:
    """Run the relay in the foreground until SIGTERM or SIGINT (what `mfcolab relay` does)."""
    return asyncio.run(_serve(root, port, folder))


async def _serve(root: Path, port: int, folder: RelayFolder) -> int:
    relay = Relay(root)
    runner = make_runner(relay.make_app())
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as exc:
            raise PortBusyError(port, "relay", "--relay-port") from exc
        state = {"pid": os.getpid(), "port": port, "root": str(root), "started_at": time.time()}
        write_private(folder.state_file, json.dumps(state) + "\n")
        log.info("relay on http://127.0.0.1:%d following %s", port, relay.source.path)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("relay stopping")
        return 0
    finally:
        await runner.cleanup()
        _remove_own_state(folder)


def _remove_own_state(folder: RelayFolder) -> None:
    state = read_state(folder)
    if state and state.get("pid") == os.getpid():
        folder.state_file.unlink(missing_ok=True)


def read_state(folder: RelayFolder) -> dict[str, Any] | None:
    try:
        state = json.loads(folder.state_file.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def relay_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def running_relay(folder: RelayFolder) -> dict[str, Any] | None:
    """The live relay recorded in `folder` (its state plus its status answer), else None."""
    state = read_state(folder)
    if not state or not isinstance(state.get("pid"), int) or not pid_alive(state["pid"]):
        return None
    try:
        answer = requests.get(relay_url(int(state["port"])) + STATUS_PATH, timeout=2, proxies={"http": "", "https": ""})
        status = answer.json() if answer.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(status, dict) or status.get("pid") != state["pid"]:
        return None
    return {**state, **status}


def start_relay(root: Path, port: int, folder: RelayFolder) -> tuple[dict[str, Any], bool]:
    """Start the relay detached (own session), or reuse a live one for the same root and port.

    Returns its state and whether it was already running."""
    current = running_relay(folder)
    if current and current.get("root") == str(root) and current.get("port") == port:
        return current, True
    if current:
        stop_relay(folder)
    require_free_port(port, "relay", "--relay-port")
    folder.path.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "mfcolab", "relay", "--root", str(root), "--relay-port", str(port),
            "--folder", str(folder.path)]  # fmt: skip
    with open_log(folder.log_file) as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = running_relay(folder)
        if state and state.get("pid") == child.pid:
            return state, False
        if child.poll() is not None:
            break
        time.sleep(0.05)
    if child.poll() is None:
        _stop_pid(child.pid)
    raise ConnectError(f"the relay did not start; last lines of {folder.log_file}:\n{tail_file(folder.log_file, 10)}",
                       "mfcolab connect --watch --relay-port <another port>")


def stop_relay(folder: RelayFolder, timeout: float = 10.0) -> bool:
    """Stop the relay recorded in `folder`. False if none was running."""
    state = read_state(folder)
    pid = state.get("pid") if state else None
    if not isinstance(pid, int) or not pid_alive(pid) or not _is_relay(pid):
        folder.state_file.unlink(missing_ok=True)
        return False
    _stop_pid(pid, timeout)
    folder.state_file.unlink(missing_ok=True)
    return True


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    stop_processes([pid], timeout, kill_group=True)


def _is_relay(pid: int) -> bool:
    """A recorded pid may have been reused by now: only stop a process that is an mfcolab relay."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"mfcolab" in argv and b"relay" in argv
