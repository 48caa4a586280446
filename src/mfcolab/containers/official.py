"""The upstream Metaflow images under udocker: `--engine official` and `--ui official`.

Every command and environment variable the upstream containers get is in this file, next to
the line of the service contract it follows (reference/metaflow-service-contract.md §3-§5), so
a reader can audit them in one place. Both run from the one published image; the schema is
mfcolab's (`sql/`), so no migration container runs.

    metadata service  127.0.0.1:<service_port>/metadata/...   front door /metadata -> here, path kept
    UI backend        127.0.0.1:<ui_port>/api/...             front door /api (and its WebSockets) -> here
    UI static bundle  <local>/ui-static                        front door /, window.METAFLOW_SERVICE="/api"

Both run as an unprivileged system user (container_user.py). The metadata service gets no
datastore at all; the UI backend sees a copy of it, at the datastore's own path, that it can
read and not change, plus a shim that makes its moves out of the datastore copies and asks for
a sync of the copy when it lacks a task (datastore_view.py, docs/official-images.md).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, ContainerError
from ..settings import Settings
from ..web.uibundle import replace_folder
from .component import ContainerComponent
from .container_user import container_user, give_to_container_user
from .datastore_view import REQUEST_DIR, REQUEST_ENV, REQUEST_FILE, SHIM_DIR, SHIM_ROOT_ENV, SYNCED_FILE, ViewSync, write_shim
from .pulls import ProgressCallback
from .udocker_client import ContainerSpec, Udocker

# §3.5: published on every upstream release; the service and the UI backend share it.
IMAGE = "netflixoss/metaflow_metadata_service:v2.5.1"
IMAGE_ENV = "MFCOLAB_OFFICIAL_IMAGE"  # another tag or mirror, e.g. public.ecr.aws/outerbounds/metaflow_metadata_service:v2.4.13

# §3.5 "Commands used by the official deployments": the /opt/latest virtualenv, cwd /root so that
# /root/services shadows site-packages and the ui/ bundle is found.
PYTHON = "/opt/latest/bin/python3"
WORKDIR = "/root"
METADATA_COMMAND = (PYTHON, "-m", "services.metadata_service.server")
UI_COMMAND = (PYTHON, "-m", "services.ui_backend_service.ui_server")

# §5: the service answers only under its PATH_PREFIX; the front door passes paths through unchanged.
METADATA_PREFIX = "/metadata"
UI_PREFIX = "/api"
# §3.5: where the image keeps the metaflow-ui release (index.html, static/).
UI_BUNDLE = "/root/services/ui_backend_service/ui"

UI_POOL_MAX = 5  # §4.2: the UI backend opens six pools of POOL_MIN..POOL_MAX; Postgres allows 100 connections


@dataclass(frozen=True)
class Database:
    """Where the upstream services find mfcolab's Postgres."""

    user: str
    password: str
    name: str
    port: int
    host: str = "127.0.0.1"

    @classmethod
    def from_dsn(cls, dsn: str) -> Database:
        """From a libpq URL: postgresql://user:password@host:port/dbname."""
        url = urlsplit(dsn)
        if url.scheme not in ("postgresql", "postgres") or not url.username or not url.port:
            raise ConfigError("the database address must be postgresql://user:password@host:port/dbname",
                              "this is a bug: report the DSN shape (without the password)")
        return cls(unquote(url.username), unquote(url.password or ""), url.path.lstrip("/") or "postgres",
                   url.port, url.hostname or "127.0.0.1")


def official_image(settings: Settings | None = None) -> str:
    """`--image` (Settings.official_image, env MFCOLAB_OFFICIAL_IMAGE), else the pinned tag."""
    return (settings.official_image if settings is not None else "") or os.environ.get(IMAGE_ENV) or IMAGE


def database_env(db: Database) -> dict[str, str]:
    """§3.1, read by both services. Postgres listens on 127.0.0.1 only and speaks no TLS."""
    return {
        "MF_METADATA_DB_HOST": db.host,
        "MF_METADATA_DB_PORT": str(db.port),
        "MF_METADATA_DB_USER": db.user,
        "MF_METADATA_DB_NAME": db.name,
    }


def secret_env(db: Database) -> dict[str, str]:
    """§3.1, the password: passed in a 0600 file, never on a command line or in a log."""
    return {"MF_METADATA_DB_PSWD": db.password}


def metadata_env(settings: Settings, db: Database) -> dict[str, str]:
    """§3.2. Triggers stay off (their default): the schema in sql/ owns them."""
    return {
        **database_env(db),
        "MF_METADATA_HOST": "127.0.0.1",
        "MF_METADATA_PORT": str(settings.service_port),
        "PATH_PREFIX": METADATA_PREFIX,
    }


def ui_env(settings: Settings, db: Database) -> dict[str, str]:
    """§3.4 and §4.3."""
    return {
        **database_env(db),
        "MF_METADATA_DB_POOL_MIN": "1",
        "MF_METADATA_DB_POOL_MAX": str(UI_POOL_MAX),
        "MF_UI_METADATA_HOST": "127.0.0.1",
        "MF_UI_METADATA_PORT": str(settings.ui_port),
        "PATH_PREFIX": UI_PREFIX,
        # The front door serves the bundle at / (the backend would serve it only under /api).
        "UI_ENABLED": "0",
        # sql/ installs upstream's NOTIFY triggers; the backend's role may not create functions or
        # triggers (it owns the tables and nothing else), and would fail trying to replace them.
        "DB_TRIGGER_CREATE": "0",
        # Its own Metaflow client reads through its embedded read-only metadata app.
        "METAFLOW_SERVICE_URL": f"http://127.0.0.1:{settings.ui_port}{UI_PREFIX}/metadata",
        "METAFLOW_DEFAULT_METADATA": "service",
        # Artifacts, logs, DAGs and cards are read from the absolute paths the runs recorded, which
        # are under the datastore folder; the container sees the view there.
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(settings.datastore_dir),
        # Cards: `connect` profiles write them to <ds-root>/mf.cards, ds-root being <datastore>/.metaflow.
        "METAFLOW_CARD_LOCALROOT": str(card_root(settings)),
        # No reads ahead of a request: the backend would read (and cache) a new run's files from
        # the view before the view has them (it lags the datastore by up to ViewSync.interval;
        # a read of a task the view lacks asks for a sync and waits for it, see the shim).
        "FEATURE_PREFETCH_DISABLE": "1",
        # The shim (datastore_view.SHIM): a move out of the datastore is a copy.
        "PYTHONPATH": SHIM_DIR,
        SHIM_ROOT_ENV: str(settings.datastore_dir),
        REQUEST_ENV: f"{REQUEST_DIR}/{REQUEST_FILE}",
    }


def card_root(settings: Settings) -> Path:
    return settings.datastore_dir / ".metaflow" / "mf.cards"


def datastore_view_dir(settings: Settings) -> Path:
    """The copy of the datastore the UI backend sees (datastore_view.py)."""
    return settings.local / "datastore-view"


def shim_dir(settings: Settings) -> Path:
    return settings.local / "container-shim"


def view_request_dir(settings: Settings) -> Path:
    """Where the UI backend's container asks for a sync of the view (the one folder it may write)."""
    return settings.local / "view-requests"


def metadata_spec(settings: Settings, db: Database, image: str | None = None) -> ContainerSpec:
    return ContainerSpec(
        name="metadata", image=image or official_image(settings), command=METADATA_COMMAND, port=settings.service_port,
        env=metadata_env(settings, db), secret_env=secret_env(db), workdir=WORKDIR,
        health_path=f"{METADATA_PREFIX}/ping",
        port_flag="--service-port",
    )


def ui_spec(settings: Settings, db: Database, image: str | None = None) -> ContainerSpec:
    return ContainerSpec(
        name="ui-backend", image=image or official_image(settings), command=UI_COMMAND, port=settings.ui_port,
        env=ui_env(settings, db), secret_env=secret_env(db), workdir=WORKDIR,
        binds=((datastore_view_dir(settings), str(settings.datastore_dir)), (shim_dir(settings), SHIM_DIR),
               (view_request_dir(settings), REQUEST_DIR)),
        health_path=f"{UI_PREFIX}/ping", port_flag="--ui-port",
    )


def ui_static_dir(settings: Settings) -> Path:
    """The metaflow-ui bundle, copied out of the image, that the front door serves at /."""
    return settings.local / "ui-static"


def copy_ui_bundle(container_dir: Path, target: Path) -> Path:
    """Copy index.html and static/ from a created container to `target` (replaced whole)."""
    source = container_dir / "ROOT" / UI_BUNDLE.lstrip("/")
    if not (source / "index.html").is_file():
        raise ContainerError(f"the image has no UI bundle at {UI_BUNDLE}",
                             f"use an image that ships metaflow-ui (--image or {IMAGE_ENV}; default {IMAGE})")
    return replace_folder(target, lambda staging: shutil.copytree(source, staging, symlinks=False, dirs_exist_ok=True))


class UiBackendComponent(ContainerComponent):
    """The UI backend; preparing it also puts the static bundle where the front door serves it.

    While it runs, `view` keeps its copy of the datastore current (datastore_view.ViewSync).
    """

    def __init__(self, spec: ContainerSpec, udocker: Udocker, log_dir: Path, static_dir: Path, *,
                 registry: str = "", view: ViewSync | None = None, shim: Path | None = None) -> None:
        super().__init__(spec, udocker, log_dir, registry=registry)
        self.static_dir = static_dir
        self.view = view
        self.shim = shim

    def before_spawn(self) -> None:
        super().before_spawn()
        if self.shim is not None:
            write_shim(self.shim)
        if self.view is not None:
            if self.view.request is not None:
                open_to_the_container(self.view.request.parent)
            self.view.sync()  # the whole datastore once before the backend can ask for any of it

    def start(self) -> None:
        super().start()
        if self.view is not None:
            self.view.start()

    def stop(self, timeout: float) -> None:
        if self.view is not None:
            self.view.stop()
        super().stop(timeout)

    def prepare(self, progress: ProgressCallback | None = None) -> Path:
        container_dir = super().prepare(progress)
        source = self.static_dir.with_name(self.static_dir.name + ".source")  # which container it came from
        if not (self.static_dir / "index.html").is_file() or _read(source) != self.container:
            copy_ui_bundle(container_dir, self.static_dir)
            source.write_text(self.container)
        return container_dir

    def info(self) -> dict[str, Any]:
        return {**super().info(), "static_dir": str(self.static_dir)}


def open_to_the_container(folder: Path) -> None:
    """`folder` writable by the user the containers run as (the current user when there is no other)."""
    if container_user() is None:
        folder.mkdir(parents=True, exist_ok=True)
    else:
        give_to_container_user(folder)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def components(settings: Settings, database: Any, image: str | None = None) -> list[ContainerComponent]:
    """The containers `--engine official` and `--ui official` need, in start order.

    `database` is the Postgres component (anything with a libpq `.dsn`) or a DSN string.
    """
    db = Database.from_dsn(database if isinstance(database, str) else database.dsn)
    udocker = Udocker.from_settings(settings)
    found: list[ContainerComponent] = []
    if settings.engine == "official":
        found.append(ContainerComponent(metadata_spec(settings, db, image), udocker, settings.logs_dir,
                                        registry=settings.registry))
    if settings.ui == "official":
        found.append(UiBackendComponent(ui_spec(settings, db, image), udocker, settings.logs_dir,
                                        ui_static_dir(settings), registry=settings.registry,
                                        view=ViewSync(settings.datastore_dir, datastore_view_dir(settings),
                                                      request=view_request_dir(settings) / REQUEST_FILE,
                                                      synced=shim_dir(settings) / SYNCED_FILE),
                                        shim=shim_dir(settings)))
    return found


def prepare_all(found: list[ContainerComponent], progress: ProgressCallback | None = None) -> None:
    """Pull and create everything up front (for `up`, in the foreground, with a progress display)."""
    for component in found:
        component.prepare(progress)

