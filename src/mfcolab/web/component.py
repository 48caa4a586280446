"""The web process as a supervised component: its command line, its health check, its port.

Kept apart from the process itself (server.py), so that the supervisor and `up` import no aiohttp,
asyncpg or service code (about a second on a notebook machine).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import requests

from .. import credentials, postgres
from ..schema import SERVICE_ROLE
from ..settings import Settings
from ..supervisor.component import ProcessComponent, require_free_port
from ..supervisor.process import ManagedProcess
from .uibundle import static_dir


def database_dsn(settings: Settings) -> str:
    """Where the metadata service (native or official) connects: as its own role, not the superuser."""
    return postgres.dsn_for(settings.pg_port, credentials.service_password(settings), SERVICE_ROLE)


def served_bundle(settings: Settings) -> Path | None:
    """The unpacked UI bundle to serve at /, or None (no UI, or `up` could not get one)."""
    if settings.ui == "none":
        return None
    folder = static_dir(settings)
    return folder if (folder / "index.html").is_file() else None


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
