"""The asyncpg pool of the metadata service and its lifecycle.

The pool is opened when the application starts (cleanup_ctx) and closed when it stops.
Connections keep their prepared statements (asyncpg caches them by SQL text). A connection
returned to the pool is not sent the default reset query: the service never changes session
state, and skipping it saves a round trip per request. An open transaction is still rolled
back by asyncpg itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from .http import ApiError

log = logging.getLogger(__name__)

APPLICATION_NAME = "mfcolab-metadata-service"
STATEMENT_CACHE_SIZE = 512
CONNECT_ATTEMPTS = 50
CONNECT_PAUSE = 0.2


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo (see the module docstring)."""


class Database:
    def __init__(self, dsn: str, pool_min: int, pool_max: int) -> None:
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = max(pool_max, pool_min)
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ApiError(503, "the metadata service is starting or stopping, retry shortly")
        return self._pool

    async def open(self) -> None:
        last: Exception | None = None
        for _ in range(CONNECT_ATTEMPTS):
            try:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=self.pool_min,
                    max_size=self.pool_max,
                    statement_cache_size=STATEMENT_CACHE_SIZE,
                    reset=_keep_session,
                    command_timeout=60,
                    server_settings={"application_name": APPLICATION_NAME},
                )
                log.info("metadata service connected to Postgres (pool %d..%d)", self.pool_min, self.pool_max)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                last = exc
                await asyncio.sleep(CONNECT_PAUSE)
        raise RuntimeError(f"the metadata service cannot connect to Postgres: {last}")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        await self.open()
        yield
        await self.close()

    async def connection_lost(self) -> None:
        """After one connection failed (Postgres restarted, or a backend was killed), replace
        every pooled connection on its next use instead of letting each fail once."""
        if self._pool is not None:
            await self._pool.expire_connections()

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self.pool.fetchval(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self.pool.fetchrow(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        return str(await self.pool.execute(query, *args))


def updated_rows(status: str) -> int:
    """The row count of an asyncpg command status such as 'UPDATE 1'."""
    return int(status.rsplit(" ", 1)[-1])


DB_KEY = web.AppKey("mfcolab_service_db", Database)


def db(request: web.Request) -> Database:
    return request.app[DB_KEY]
