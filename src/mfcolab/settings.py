"""One frozen settings object: folders, ports and engine choices.

Built once per process by `Settings.resolve()` from, in order of precedence: explicit
arguments (the CLI's flags), environment variables, defaults. The supervisor hands the same
settings to its children through `to_env()`, so every process of a stack agrees.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENGINES = ("native", "official")
UIS = ("none", "native", "official")


def _default_local() -> Path:
    if Path("/content").is_dir():  # Google Colab
        return Path("/content/mfcolab")
    if os.geteuid() == 0:  # Postgres runs as its own user, which must not be let into /root
        return Path("/var/lib/mfcolab/local")
    return Path.home() / ".mfcolab" / "local"


def _as_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


# field name -> environment variable. The seed names MF_ROOT and PGDATA_DIR are kept.
ENV_NAMES = {
    "root": "MF_ROOT",
    "local": "MFCOLAB_LOCAL",
    "pgdata": "PGDATA_DIR",
    "host": "MFCOLAB_HOST",
    "port": "MFCOLAB_PORT",
    "pg_port": "MFCOLAB_PG_PORT",
    "engine": "MFCOLAB_ENGINE",
    "ui": "MFCOLAB_UI",
    "ui_bundle": "MFCOLAB_UI_BUNDLE",
    "tunnel": "MFCOLAB_TUNNEL",
    "no_auth": "MFCOLAB_NO_AUTH",
    "cloudflared": "MFCOLAB_CLOUDFLARED",
    "snapshot_interval": "MFCOLAB_SNAPSHOT_INTERVAL",
    "keep_generations": "MFCOLAB_KEEP_GENERATIONS",
    "service_port": "MFCOLAB_SERVICE_PORT",
    "ui_port": "MFCOLAB_UI_PORT",
    "registry": "MFCOLAB_REGISTRY",
    "proot": "MFCOLAB_PROOT",
    "official_image": "MFCOLAB_OFFICIAL_IMAGE",
    "access_log": "MFCOLAB_ACCESS_LOG",
    "pg_user": "MFCOLAB_PG_USER",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    root: Path  # survives the machine (Google Drive on Colab)
    local: Path  # fast local disk: live PGDATA, pid files, logs, udocker
    pgdata: Path
    host: str = "127.0.0.1"  # front door bind address
    port: int = 7860  # front door
    pg_port: int = 15432  # Postgres on 127.0.0.1
    engine: str = "native"
    ui: str = "native"  # none, native (the UI bundle + mfcolab's UI API) or official (upstream's backend)
    ui_bundle: str = ""  # a metaflow-ui release zip, folder or URL; empty: the pinned release, downloaded once
    tunnel: bool = True
    no_auth: bool = False
    cloudflared: str = ""  # path to a cloudflared binary; empty: PATH, then download
    snapshot_interval: float = 5.0
    keep_generations: int = 3
    service_port: int = 8888  # official metadata service (8080 is taken on Colab)
    ui_port: int = 8083  # official UI backend
    registry: str = ""  # image registry override for udocker pulls
    proot: str = ""  # system proot for udocker (machines without udocker's tools download)
    official_image: str = ""  # the official engine/UI image; empty: the pinned one in official.py
    access_log: bool = False  # one line per request in the web log (costs more CPU than a small request)
    pg_user: str = "mfcolab-pg"  # the system user Postgres runs as when mfcolab runs as root (created on first use)

    @classmethod
    def resolve(cls, **given: Any) -> Settings:
        """Explicit values (None means "not given") win over the environment, then defaults."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = given.get(field.name)
            if value is None and ENV_NAMES.get(field.name) in os.environ:
                value = os.environ[ENV_NAMES[field.name]]
            if value is not None and value != "":
                values[field.name] = _convert(field.name, field.type, value)
        root = values.get("root") or Path.home() / ".mfcolab" / "root"
        local = values.get("local") or _default_local()
        values["root"] = Path(root).expanduser().absolute()
        values["local"] = Path(local).expanduser().absolute()
        values["pgdata"] = Path(values.get("pgdata") or values["local"] / "pgdata").expanduser().absolute()
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}", f"--engine {' or '.join(ENGINES)}")
        if self.ui not in UIS:
            raise ConfigError(f"unknown UI {self.ui!r}", f"--ui {' or '.join(UIS)}")
        if self.no_auth and self.host not in ("127.0.0.1", "localhost"):
            raise ConfigError("--no-auth is only allowed on a front door bound to 127.0.0.1", "drop --no-auth")
        if self.no_auth and self.tunnel:
            # The tunnel publishes the 127.0.0.1 door on the internet: no key there means no lock at all.
            raise ConfigError("--no-auth (or MFCOLAB_NO_AUTH) is refused while the tunnel is on: it would publish "
                              "the service without a key", "drop --no-auth, or add --no-tunnel")
        if self.pgdata == self.root or self.root in self.pgdata.parents:
            raise ConfigError(
                f"the Postgres data directory {self.pgdata} is inside the root folder {self.root}",
                "keep PGDATA_DIR on local disk (the root folder cannot hold a live database)",
            )
        if self.snapshot_interval < 0 or self.keep_generations < 1:
            raise ConfigError("--snapshot-interval must be >= 0 and --keep at least 1", "--snapshot-interval 5 --keep 3")

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, for child processes."""
        env = {}
        for name, var in ENV_NAMES.items():
            value = getattr(self, name)
            env[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    # Folders and files, named in one place.
    @property
    def run_dir(self) -> Path:
        return self.local / "run"

    @property
    def logs_dir(self) -> Path:
        return self.local / "logs"

    @property
    def udocker_dir(self) -> Path:
        return self.local / "udocker"

    @property
    def wal_staging_dir(self) -> Path:
        return self.local / "wal-staging"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def datastore_dir(self) -> Path:
        return self.root / "datastore"

    @property
    def key_file(self) -> Path:
        return self.root / "access_key"

    @property
    def db_password_file(self) -> Path:
        return self.root / "db_password"

    @property
    def sessions_file(self) -> Path:
        return self.root / "sessions.json"

    @property
    def connection_file(self) -> Path:
        return self.root / "connection.json"

    @property
    def supervisor_pid_file(self) -> Path:
        return self.run_dir / "supervisor.pid"

    @property
    def status_file(self) -> Path:
        return self.run_dir / "status.json"

    @property
    def local_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


def _convert(name: str, kind: Any, value: Any) -> Any:
    kind = str(kind)
    try:
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
        if kind in ("bool", bool):
            return value if isinstance(value, bool) else _as_bool(str(value))
        if kind in ("Path", Path):
            return Path(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        var = ENV_NAMES.get(name, name)
        raise ConfigError(f"{name} must be a {kind}, got {value!r}", f"fix --{name.replace('_', '-')} or {var}") from exc
