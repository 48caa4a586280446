"""The UI API under test: served from a background thread next to the native metadata service
(the way the front door mounts both: /metadata and /api, one database pool), real flows run
against it, and a checksum of the whole datastore."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from helpers import AppThread, wait_until
from mfcolab.service import create_app as create_service
from mfcolab.service.database import DB_KEY
from mfcolab.service.livelogs import SPOOL_KEY
from mfcolab.settings import Settings
from mfcolab.ui import create_app as create_ui

CHROMIUM = Path("/usr/bin/chromium")
# This machine's closed network needs the background-networking flags (no update or sync calls).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 60_000  # bound for one page element to appear on this busy 2-core machine

FLOWS = Path(__file__).resolve().parents[1] / "flows"
UI_FLOWS = Path(__file__).resolve().parent / "flows"


def client_env(service_url: str, root: Path, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    sysroot = root / "datastore"
    env.update({
        "METAFLOW_HOME": str(home),
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": service_url,
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(sysroot),
        "USERNAME": "tester",
        "USER": "tester",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def run_flow(env: dict[str, str], path: Path, *args: str, expect_ok: bool = True,
             extra_env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Runs `python <flow> run <args>` (in `cwd`, default the flow's folder); returns the run id.

    A card is written under the `.metaflow` folder found from the working folder, so a card
    flow runs inside the datastore's sysroot: its cards land in `<ds-root>/mf.cards`, where
    the reader looks (what the mfcolab Metaflow extension arranges for every flow)."""
    proc = subprocess.run(
        [sys.executable, str(path), "--no-pylint", "run", *args], check=False,
        env={**env, **(extra_env or {})}, cwd=cwd or path.parent, capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == expect_ok, output[-4000:]
    match = re.search(r"Workflow starting \(run-id (\S+)\)", output)
    assert match, output[-4000:]
    return match.group(1)


def tree_checksum(folder: Path) -> dict[str, str]:
    """Every file, folder and link under `folder`: its kind, mode, size and content hash."""
    sums: dict[str, str] = {}
    for current, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            path = Path(current, name)
            info = path.lstat()
            relative = str(path.relative_to(folder))
            if path.is_symlink():
                sums[relative] = "link:" + os.readlink(path)
            elif path.is_dir():
                sums[relative] = f"dir:{info.st_mode:o}"
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                sums[relative] = f"file:{info.st_mode:o}:{info.st_size}:{info.st_mtime_ns}:{digest}"
    return sums


class Api:
    def __init__(self, http: requests.Session, base: str) -> None:
        self.http = http
        self.base = base

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.http.get(self.base + path, params=params or None, timeout=120)

    def ok(self, path: str, **params: Any) -> Any:
        resp = self.get(path, **params)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:500])
        return resp.json()

    def data(self, path: str, **params: Any) -> Any:
        return self.ok(path, **params)["data"]


def wait_for_status(api: Api, flow: str, run: str, status: str, timeout: float = 180) -> dict[str, Any]:
    """The run once the API says `status` (bounded: a lost heartbeat takes about a minute)."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(api.data(f"/flows/{flow}/runs/{run}"))
        return bool(seen["status"] == status)

    wait_until(reached, timeout=timeout, interval=1.0, what=f"{flow}/{run} to be {status}")
    return seen


@dataclass
class Stack:
    settings: Settings
    server: AppThread

    @property
    def metadata_url(self) -> str:
        return self.server.url + "/metadata"

    @property
    def api_url(self) -> str:
        return self.server.url + "/api"


def build_stack(settings: Settings, dsn: str) -> AppThread:
    def build():  # type: ignore[no-untyped-def]

        front = web.Application()
        service = create_service(dsn, pool_min=1, pool_max=8)
        front.add_subapp("/metadata", service)
        front.add_subapp("/api", create_ui(settings, service[DB_KEY], service[SPOOL_KEY]))
        return front

    return AppThread(build).start()


@dataclass
class Runs:
    linear: str
    branch: str
    foreach: str
    retry: str
    failed: str
    card: str
    chatty: str
    hostile: str
    outside: Path  # where the hostile values would write
    tmp_target: Path
