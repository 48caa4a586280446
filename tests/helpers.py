"""Helpers shared by the tests: free ports, bounded waits, settings in temporary folders, a real Postgres."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

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
