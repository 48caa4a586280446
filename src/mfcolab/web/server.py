"""The web process: the front door on port 7860, with the native metadata service inside it.

Run by the supervisor as `python -m mfcolab.web.server` (component.py), configured through the
environment (`Settings.to_env()`), so it restarts independently of the supervisor and its CPU
time is its own in /proc.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .. import credentials, logsetup
from ..service import create_app as create_service
from ..service.database import DB_KEY, Database
from ..service.livelogs import SPOOL_KEY, LogSpool
from ..settings import Settings
from ..ui import create_app as create_ui_api
from .component import database_dsn, served_bundle
from .frontdoor import create_app, make_runner
from .proxy import Upstream

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> web.Application:
    key = None if settings.no_auth else credentials.access_key(settings)
    metadata: web.Application | Upstream
    if settings.engine == "native":
        metadata = create_service(database_dsn(settings))
    else:
        metadata = Upstream(f"http://127.0.0.1:{settings.service_port}")
    api: web.Application | Upstream | None = None
    if settings.ui == "official":
        api = Upstream(f"http://127.0.0.1:{settings.ui_port}", "UI backend")
    elif settings.ui == "native":
        api = create_ui_api(settings, _shared_pool(metadata) or database_dsn(settings), _shared_spool(metadata))
    return create_app(key, metadata, api=api, static_dir=served_bundle(settings),
                      key_file=settings.key_file, sessions_file=settings.sessions_file)


def _shared_pool(metadata: web.Application | Upstream) -> Database | None:
    """The native metadata service's database pool, which the UI API shares (None for an upstream)."""
    if not isinstance(metadata, web.Application):
        return None
    return metadata[DB_KEY]


def _shared_spool(metadata: web.Application | Upstream) -> LogSpool | None:
    """The native metadata service's spool of running tasks' logs (None for an upstream)."""
    if not isinstance(metadata, web.Application):
        return None
    return metadata[SPOOL_KEY]


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then close connections and the database pool."""
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    runner = make_runner(build_app(settings), shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    log.info("front door listening on %s:%s", settings.host, settings.port)
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    logsetup.for_service()
    settings = Settings.resolve()
    if not settings.access_log:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    serve(settings)


if __name__ == "__main__":
    main()
