"""The web process: the front door on port 7860, with the native metadata service inside it.

Run by the supervisor as `python -m mfcolab.web.server`, configured through the environment
(`Settings.to_env()`), so it restarts independently of the supervisor and its CPU time is
its own in /proc.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import requests

from .. import credentials, logsetup, postgres
from ..schema import SERVICE_ROLE
from ..settings import Settings
from ..supervisor.component import ProcessComponent, require_free_port
from ..supervisor.process import ManagedProcess

log = logging.getLogger(__name__)


def database_dsn(settings: Settings) -> str:
    """Where the metadata service (native or official) connects: as its own role, not the superuser."""
    return postgres.dsn_for(settings.pg_port, credentials.service_password(settings), SERVICE_ROLE)


# The app's modules (aiohttp, asyncpg, the service) are imported inside the functions that run in
# the web process only: the supervisor and `up` import this module for WebComponent, and those
# imports would add about a second to both.


def build_app(settings: Settings) -> Any:
    from ..service import create_app as create_service
    from . import frontdoor

    key = None if settings.no_auth else credentials.access_key(settings)
    if settings.engine == "native":
        metadata: Any = create_service(database_dsn(settings))
    else:
        metadata = frontdoor.Upstream(f"http://127.0.0.1:{settings.service_port}")
    api: Any = None
    if settings.ui == "official":
        api = frontdoor.Upstream(f"http://127.0.0.1:{settings.ui_port}", "UI backend")
    elif settings.ui == "native":
        from ..ui import create_app as create_ui_api

        api = create_ui_api(settings, _shared_pool(metadata) or database_dsn(settings), _shared_spool(metadata))
    return frontdoor.create_app(key, metadata, api=api, static_dir=served_bundle(settings),
                                key_file=settings.key_file, sessions_file=settings.sessions_file)


def _shared_pool(metadata: Any) -> Any:
    """The native metadata service's database pool, which the UI API shares (None for an upstream)."""
    from aiohttp import web

    if not isinstance(metadata, web.Application):
        return None
    from ..service.database import DB_KEY

    return metadata[DB_KEY]


def _shared_spool(metadata: Any) -> Any:
    """The native metadata service's spool of running tasks' logs (None for an upstream)."""
    from aiohttp import web

    if not isinstance(metadata, web.Application):
        return None
    from ..service.livelogs import SPOOL_KEY

    return metadata[SPOOL_KEY]


def served_bundle(settings: Settings) -> Path | None:
    """The unpacked UI bundle to serve at /, or None (no UI, or `up` could not get one)."""
    if settings.ui == "none":
        return None
    from .uibundle import static_dir

    folder = static_dir(settings)
    return folder if (folder / "index.html").is_file() else None


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then close connections and the database pool."""
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    from aiohttp import web

    from .frontdoor import make_runner

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


class WebComponent(ProcessComponent):
    """The front door + native service process, as a supervised component."""

    start_timeout = 30.0

    def __init__(self, settings: Settings) -> None:
        super().__init__("web", settings.logs_dir)
        self.settings = settings
        self.session = requests.Session()

    @property
    def port(self) -> int:
        return self.settings.port

    def preflight(self) -> None:
        require_free_port(self.settings.port, "front door", "--port", self.settings.host if self.settings.host != "localhost" else "127.0.0.1")

    def make_process(self) -> ManagedProcess:
        env = {**_inherited_env(), **self.settings.to_env()}
        return ManagedProcess(self.name, [sys.executable, "-m", "mfcolab.web.server"], self.log_path, env=env)

    def healthy(self) -> bool:
        if not self.alive():
            return False
        try:
            return self.session.get(self.settings.local_url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def info(self) -> dict[str, Any]:
        return {"url": self.settings.local_url, "engine": self.settings.engine}


def _inherited_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MFCOLAB_")}


def main() -> None:
    logsetup.for_service()
    settings = Settings.resolve()
    if not settings.access_log:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    serve(settings)


if __name__ == "__main__":
    main()
