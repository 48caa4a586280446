"""The native metadata service on 127.0.0.1, mounted at /metadata the way the front door
mounts it, served from a background thread against the session's real Postgres."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from aiohttp import web
from helpers import AppThread

from mfcolab import schema
from mfcolab.service import create_app

PREFIX = "/metadata"


@pytest.fixture(scope="session")
def service(pg_dsn: str) -> Iterator[AppThread]:
    """Connected as the service's own role, as `mfcolab up` connects it (not the superuser)."""
    schema.give_tables_to_service(pg_dsn, "service-test-password")
    dsn = pg_dsn.replace("postgres:test-password@", f"{schema.SERVICE_ROLE}:service-test-password@")

    def build() -> web.Application:
        root = web.Application()
        root.add_subapp(PREFIX, create_app(dsn, pool_min=1, pool_max=8))
        return root

    server = AppThread(build).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_url(service: AppThread) -> str:
    return service.url + PREFIX


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture()
def flow_name() -> str:
    return f"Flow{uuid.uuid4().hex[:12]}"
