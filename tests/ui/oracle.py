"""Upstream's UI backend (metaflow-service 2.5.1) run natively, as an oracle for the UI API.

Its venv is built once, with its own requirements (psycopg2 as the binary wheel: no compiler
here), under ~/.cache/mfcolab-tests/ and reused by later runs. The backend runs with its
prefetching, realtime and trigger creation off, against a copy of the test database (it
must never touch the one mfcolab serves).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

UPSTREAM = Path(__file__).resolve().parents[3].parent / "shared" / "upstream" / "metaflow-service"
if not UPSTREAM.is_dir():
    UPSTREAM = Path("/work/shared/upstream/metaflow-service")
CACHE = Path(os.environ.get("MFCOLAB_TEST_CACHE", Path.home() / ".cache" / "mfcolab-tests"))
REQUIREMENTS = [
    "aiohttp>=3.8.1,<4", "aiohttp_cors==0.7.0", "aiopg", "boto3", "packaging", "psycopg2-binary",
    "click==8.0.3", "metaflow>=2.11.4", "pyee==8.0.1", "throttler==1.2.0", "pygit2==1.12.1",
]
# Missing from the stored tree; /config (GA_TRACKING_ID) is never compared.
CONFIG_STANDIN = "class ConfigApi:\n    def __init__(self, app):\n        pass\n"
RECIPE = hashlib.sha256(repr((REQUIREMENTS, CONFIG_STANDIN, sys.version_info[:2])).encode()).hexdigest()[:12]
VENV = CACHE / f"upstream-ui-backend-{RECIPE}"


def python() -> Path:
    return VENV / "bin" / "python"


def build_venv() -> Path:
    """The oracle's venv, built once per recipe into a temporary folder and renamed into place
    (a venv run with `python -m` survives the rename), so concurrent runs never share a
    half-built one."""
    if python().exists():
        return python()
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{VENV.name}.building-", dir=CACHE))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
        pip = [str(building / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *REQUIREMENTS], check=True, timeout=1800)
        # The package itself (it reads its own version), from a copy: the shared tree stays as it is.
        source = building / "src"
        shutil.copytree(UPSTREAM, source, ignore=shutil.ignore_patterns("ui", "node_modules", ".git"))
        config = source / "services" / "ui_backend_service" / "api" / "config.py"
        if not config.exists():
            config.write_text(CONFIG_STANDIN)
        subprocess.run([*pip, "--no-deps", str(source)], check=True, timeout=600)
        try:
            building.rename(VENV)
        except OSError:  # another run finished first
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return python()


class UpstreamBackend:
    """`python -m services.ui_backend_service.ui_server` from the upstream source tree."""

    def __init__(self, dsn_parts: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "MF_", "FEATURE_"))}
        env.update({
            "MF_METADATA_DB_HOST": dsn_parts["host"], "MF_METADATA_DB_PORT": dsn_parts["port"],
            "MF_METADATA_DB_USER": dsn_parts["user"], "MF_METADATA_DB_PSWD": dsn_parts["password"],
            "MF_METADATA_DB_NAME": dsn_parts["dbname"], "MF_UI_METADATA_PORT": str(port),
            "MF_UI_METADATA_HOST": "127.0.0.1", "UI_ENABLED": "0", "DB_TRIGGER_CREATE": "0",
            "FEATURE_PREFETCH_DISABLE": "1", "FEATURE_DB_LISTEN_DISABLE": "1", "FEATURE_HEARTBEAT_DISABLE": "1",
            "FEATURE_WS_DISABLE": "1", "USERNAME": "none",
        })
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, cwd: Path) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(python()), "-m", "services.ui_backend_service.ui_server"], cwd=cwd, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the upstream UI backend exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/ping", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the upstream UI backend did not answer within 120 s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)  # it ignores SIGTERM (contract Part B §5)
            self.proc.wait(30)


if __name__ == "__main__":
    print(build_venv())
