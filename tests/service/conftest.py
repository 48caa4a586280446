"""The native metadata service on 127.0.0.1, mounted at /metadata the way the front door
mounts it, served from a background thread against the session's real Postgres."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest
import requests
from aiohttp import web

from mfcolab import schema
from mfcolab.service import create_app

PREFIX = "/metadata"


class ServiceThread:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="metadata-service", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the metadata service did not start within 60 s")
        if self._error is not None:
            raise RuntimeError(f"the metadata service failed to start: {self._error}")

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        root = web.Application()
        root.add_subapp(PREFIX, create_app(self.dsn, pool_min=1, pool_max=8))
        self._runner = web.AppRunner(root, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def service(pg_dsn: str) -> Iterator[ServiceThread]:
    """Connected as the service's own role, as `mfcolab up` connects it (not the superuser)."""
    schema.give_tables_to_service(pg_dsn, "service-test-password")
    server = ServiceThread(pg_dsn.replace("postgres:test-password@", f"{schema.SERVICE_ROLE}:service-test-password@"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_url(service: ServiceThread) -> str:
    return service.url


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture()
def flow_name() -> str:
    return f"Flow{uuid.uuid4().hex[:12]}"
