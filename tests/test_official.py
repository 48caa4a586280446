"""`--engine official` and `--ui official`: the exact commands and environment, checked against
reference/metaflow-service-contract.md §3-§5, then run for real under udocker with a stand-in image
that has the official image's layout (the real one cannot be pulled here), behind the front door.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests
from aiohttp import web

from helpers import free_port, make_settings, wait_until
from mfcolab import credentials, schema
from mfcolab.containers import official
from mfcolab.containers.component import ContainerComponent
from mfcolab.containers.official import Database
from mfcolab.containers.udocker_client import container_processes
from mfcolab.errors import ConfigError, ContainerError
from mfcolab.supervisor.assembly import build_components
from mfcolab.web.frontdoor import create_app
from mfcolab.web.proxy import Upstream
from registry.fixtures import (
    INDEX_HTML,
    MAIN_JS,
    PYWEB,
    start_healthy,
    system_proot,
)
from registry.server import Registry

KEY = "official-test-key-4c2b"
DSN = "postgresql://postgres:pw%2Fwith%40chars@127.0.0.1:15999/postgres"


# -- the contract, value by value ------------------------------------------------------------------


def test_commands_follow_the_contract() -> None:
    # §3.5 "Commands used by the official deployments", run from /root.
    assert official.METADATA_COMMAND == ("/opt/latest/bin/python3", "-m", "services.metadata_service.server")
    assert official.UI_COMMAND == ("/opt/latest/bin/python3", "-m", "services.ui_backend_service.ui_server")
    assert official.WORKDIR == "/root"
    assert official.UI_BUNDLE == "/root/services/ui_backend_service/ui"
    assert official.IMAGE == "netflixoss/metaflow_metadata_service:v2.5.1"


def test_the_metadata_service_environment(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engine="official", service_port=18888)
    spec = official.metadata_spec(settings, Database.from_dsn(DSN))
    assert dict(spec.env) == {
        # §3.1
        "MF_METADATA_DB_HOST": "127.0.0.1",
        "MF_METADATA_DB_PORT": "15999",
        "MF_METADATA_DB_USER": "postgres",
        "MF_METADATA_DB_NAME": "postgres",
        # §3.2
        "MF_METADATA_HOST": "127.0.0.1",
        "MF_METADATA_PORT": "18888",
        # §5: answers only under the prefix the front door forwards unchanged
        "PATH_PREFIX": "/metadata",
    }
    assert dict(spec.secret_env) == {"MF_METADATA_DB_PSWD": "pw/with@chars"}  # §3.1, kept off the command line
    assert (spec.command, spec.workdir, spec.port, spec.volumes, spec.binds) == (official.METADATA_COMMAND, "/root", 18888, (), ())
    assert spec.health_path == "/metadata/ping" and spec.port_flag == "--service-port"
    assert spec.image == official.IMAGE


def test_the_ui_backend_environment(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ui="official", ui_port=18083)
    spec = official.ui_spec(settings, Database.from_dsn(DSN))
    datastore = str(settings.datastore_dir)
    assert dict(spec.env) == {
        # §3.1, with smaller pools: six of them (§4.2) against Postgres' 100 connections
        "MF_METADATA_DB_HOST": "127.0.0.1",
        "MF_METADATA_DB_PORT": "15999",
        "MF_METADATA_DB_USER": "postgres",
        "MF_METADATA_DB_NAME": "postgres",
        "MF_METADATA_DB_POOL_MIN": "1",
        "MF_METADATA_DB_POOL_MAX": "5",
        # §3.4 server and frontend
        "MF_UI_METADATA_HOST": "127.0.0.1",
        "MF_UI_METADATA_PORT": "18083",
        "PATH_PREFIX": "/api",
        "UI_ENABLED": "0",
        "DB_TRIGGER_CREATE": "0",
        # §3.4 its embedded client, pointed at its own read-only /api/metadata (§4.1, §5)
        "METAFLOW_SERVICE_URL": "http://127.0.0.1:18083/api/metadata",
        "METAFLOW_DEFAULT_METADATA": "service",
        # §4.3 local datastore read by absolute path
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": datastore,
        # cards where connect profiles write them: <ds-root>/mf.cards
        "METAFLOW_CARD_LOCALROOT": f"{datastore}/.metaflow/mf.cards",
        # no reads ahead of a request: the datastore view may not have a new run's files yet
        "FEATURE_PREFETCH_DISABLE": "1",
        # the shim that makes a move out of the datastore a copy
        "PYTHONPATH": "/opt/mfcolab",
        "MFCOLAB_DATASTORE_ROOT": datastore,
        # where the shim asks for a sync of the view, when a task it reads is not there yet
        "MFCOLAB_SYNC_REQUEST": "/opt/mfcolab-sync/request",
    }
    assert dict(spec.secret_env) == {"MF_METADATA_DB_PSWD": "pw/with@chars"}
    # Not the datastore: a copy of it at the datastore's path, the shim's folder, and where it asks for a sync.
    assert spec.volumes == ()
    assert spec.binds == ((settings.local / "datastore-view", datastore), (settings.local / "container-shim", "/opt/mfcolab"),
                          (settings.local / "view-requests", "/opt/mfcolab-sync"))
    assert (spec.command, spec.workdir, spec.port) == (official.UI_COMMAND, "/root", 18083)
    assert spec.health_path == "/api/ping" and spec.port_flag == "--ui-port"


@pytest.mark.parametrize(("engine", "ui", "names"), [
    ("native", "none", []),
    ("official", "none", ["metadata"]),
    ("native", "official", ["ui-backend"]),
    ("official", "official", ["metadata", "ui-backend"]),
])
def test_components_follow_the_engine_and_ui(tmp_path: Path, engine: str, ui: str, names: list[str]) -> None:
    settings = make_settings(tmp_path, engine=engine, ui=ui, registry="public.ecr.aws/outerbounds")
    found = official.components(settings, DSN)
    assert [c.name for c in found] == names
    for component in found:
        assert component.udocker.home == settings.udocker_dir
        assert component.log_path == settings.logs_dir / f"{component.name}.log"
        assert component.image.registry_url == "https://public.ecr.aws"
        assert component.image.repo == "outerbounds/metaflow_metadata_service"


def test_the_supervisors_containers_connect_as_the_service_role_not_the_superuser(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engine="official", ui="official")
    found = [c for c in build_components(settings) if isinstance(c, ContainerComponent)]
    assert [c.name for c in found] == ["metadata", "ui-backend"]
    for component in found:
        assert isinstance(component, ContainerComponent)
        assert component.spec.env["MF_METADATA_DB_USER"] == schema.SERVICE_ROLE
        assert component.spec.secret_env["MF_METADATA_DB_PSWD"] == credentials.service_password(settings)
        assert credentials.db_password(settings) not in component.spec.secret_env.values()


def test_the_image_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, engine="official")
    monkeypatch.setenv(official.IMAGE_ENV, "netflixoss/metaflow_metadata_service:v2.4.13")
    assert official.components(settings, DSN)[0].spec.image == "netflixoss/metaflow_metadata_service:v2.4.13"
    assert official.components(settings, DSN, image="x/y:1")[0].spec.image == "x/y:1"


def test_a_database_address_must_be_a_libpq_url() -> None:
    with pytest.raises(ConfigError):
        Database.from_dsn("host=127.0.0.1 port=5432")


def test_an_image_without_a_ui_bundle_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "container" / "ROOT").mkdir(parents=True)
    with pytest.raises(ContainerError, match="no UI bundle"):
        official.copy_ui_bundle(tmp_path / "container", tmp_path / "ui-static")


# -- the stand-in stack under udocker, behind the front door ---------------------------------------


class FrontDoor:
    """The real front door app, served on 127.0.0.1 from a thread."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(app)
        self.port = free_port()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def stack(tmp_path: Path, registry: Registry, pg_dsn: str) -> Iterator[tuple[list[ContainerComponent], FrontDoor]]:
    settings = make_settings(tmp_path, engine="official", ui="official", service_port=free_port(),
                             ui_port=free_port(), registry=registry.url, proot=system_proot())
    found = official.components(settings, pg_dsn, image=":".join(PYWEB))
    door: FrontDoor | None = None
    try:
        official.prepare_all(found)
        for component in found:
            start_healthy(component)
        door = FrontDoor(create_app(
            KEY, Upstream(f"http://127.0.0.1:{settings.service_port}", "metadata service"),
            api=Upstream(f"http://127.0.0.1:{settings.ui_port}", "UI backend"),
            static_dir=official.ui_static_dir(settings),
        ))
        yield found, door
    finally:
        if door is not None:
            door.close()
        for component in reversed(found):
            component.stop(component.stop_timeout)


def test_the_official_layout_runs_behind_the_front_door(
        stack: tuple[list[ContainerComponent], FrontDoor], tmp_path: Path, pg_dsn: str) -> None:
    (metadata, ui), door = stack
    key = {"x-api-key": KEY}

    # The metadata service: its command, working directory and environment as the image got them.
    seen = requests.get(f"{door.url}/metadata/env", headers=key, timeout=10).json()
    assert seen["argv"][0] == "/root/services/metadata_service/server.py"  # `-m services.metadata_service.server` from /root
    assert seen["cwd"] == "/root"
    assert {k: seen["env"][k] for k in metadata.spec.env} == dict(metadata.spec.env)
    password = seen["env"]["MF_METADATA_DB_PSWD"]
    assert f":{password}@" in pg_dsn
    for component in (metadata, ui):  # the password reached the container, not a command line or log
        assert password.encode() not in Path(f"/proc/{component.pid}/cmdline").read_bytes()
        assert password not in component.log_path.read_text()
    # ...and the Postgres those variables name is reachable from inside the container.
    assert requests.get(f"{door.url}/metadata/database", headers=key, timeout=10).text in ("N", "S")
    assert metadata.spec.env["MF_METADATA_DB_PORT"] == pg_dsn.rsplit(":", 1)[1].split("/")[0]

    # The UI backend, under /api, with the key; refused without it.
    assert requests.get(f"{door.url}/api/ping", headers=key, timeout=10).text == "pong"
    assert requests.get(f"{door.url}/api/ping", timeout=10).status_code == 401
    seen = requests.get(f"{door.url}/api/env", headers=key, timeout=10).json()
    assert seen["argv"][0] == "/root/services/ui_backend_service/ui_server.py"
    assert {k: seen["env"][k] for k in ui.spec.env} == dict(ui.spec.env)
    assert seen["env"]["MF_METADATA_DB_PSWD"] == password

    # A copy of the datastore folder is at the same absolute path inside, kept current.
    datastore = Path(ui.spec.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"])
    datastore.mkdir(parents=True, exist_ok=True)
    (datastore / "artifact.txt").write_text("a run's artifact")

    def read_inside() -> str:
        return requests.get(f"{door.url}/api/read", params={"path": str(datastore / "artifact.txt")}, headers=key,
                            timeout=10).text

    wait_until(lambda: read_inside() == "a run's artifact", timeout=60, what="the datastore view to copy a new file")

    # WebSockets through the front door: with the key they reach the container, without it they are refused.
    assert asyncio.run(websocket_exchange(f"{door.url}/api/ws", key)) == ["HELLO", "echo:subscribe"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        asyncio.run(websocket_exchange(f"{door.url}/api/ws", {}))
    assert refused.value.status == 401

    # The UI bundle, copied out of the image, served at / with the relative service URL.
    index = requests.get(f"{door.url}/", headers=key, timeout=10).text
    assert 'window.METAFLOW_SERVICE="/api"' in index and "<div id=root>" in index
    assert requests.get(f"{door.url}/static/js/main.js", headers=key, timeout=10).text == MAIN_JS
    assert index.replace('<script>window.METAFLOW_SERVICE="/api";</script>', "") == INDEX_HTML
    refused_page = requests.get(f"{door.url}/", timeout=10)
    assert refused_page.status_code == 401 and "window.METAFLOW_SERVICE" not in refused_page.text


async def websocket_exchange(url: str, headers: dict[str, str]) -> list[str]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:
        hello = await ws.receive_json(timeout=10)
        await ws.send_str("subscribe")
        return [hello["type"], await ws.receive_str(timeout=10)]


def test_down_leaves_nothing_and_a_second_up_reuses_everything(
        tmp_path: Path, registry: Registry, pg_dsn: str) -> None:
    settings = make_settings(tmp_path, engine="official", ui="official", service_port=free_port(),
                             ui_port=free_port(), registry=registry.url, proot=system_proot())
    first = official.components(settings, pg_dsn, image=":".join(PYWEB))
    for component in first:
        start_healthy(component)
    dirs = [component.container_dir for component in first]
    for component in reversed(first):
        component.stop(component.stop_timeout)
    assert all(not container_processes(d) for d in dirs)  # type: ignore[arg-type]
    pulls = registry.hits["manifest pulls"]
    assert pulls == 1  # one image for both components

    second = official.components(settings, pg_dsn, image=":".join(PYWEB))
    try:
        for component in second:
            start_healthy(component)
        assert [component.container_dir for component in second] == dirs
        assert registry.hits["manifest pulls"] == pulls
        assert (official.ui_static_dir(settings) / "index.html").read_text() == INDEX_HTML
    finally:
        for component in reversed(second):
            component.stop(component.stop_timeout)
    assert all(not container_processes(d) for d in dirs)  # type: ignore[arg-type]
