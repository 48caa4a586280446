"""Fixtures of the UI API tests: one root folder, the metadata service and the UI API served
together, real flows run once per session, and the datastore checked unchanged at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
from ui_helpers import (
    FLOWS,
    UI_FLOWS,
    Api,
    Runs,
    Stack,
    build_stack,
    client_env,
    run_flow,
    tree_checksum,
)

from mfcolab import credentials, schema
from mfcolab.postgres import DB_NAME, Postgres
from mfcolab.settings import Settings

pytestmark = pytest.mark.slow


UI_DATABASE = "mfcolab_ui_tests"


@pytest.fixture(scope="session")
def pg_dsn(pg_server: Postgres) -> str:
    """A database of the UI tests' own on the suite's server: they count every run the home page
    lists, so the runs other test modules record must not show up in it."""
    conn = psycopg2.connect(pg_server.dsn)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {UI_DATABASE} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {UI_DATABASE}")
    finally:
        conn.close()
    dsn = pg_server.dsn.removesuffix(f"/{DB_NAME}") + f"/{UI_DATABASE}"
    schema.apply(dsn)
    return dsn


@pytest.fixture(scope="session")
def ui_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = tmp_path_factory.mktemp("ui")
    settings = Settings.resolve(root=base / "root", local=base / "local", tunnel=False)
    settings.datastore_dir.mkdir(parents=True)
    credentials.access_key(settings)  # the key file a hostile value must not read
    return settings


@pytest.fixture(scope="session")
def stack(ui_settings: Settings, pg_dsn: str) -> Iterator[Stack]:
    server = build_stack(ui_settings, pg_dsn)
    yield Stack(ui_settings, server)
    server.stop()


@pytest.fixture(scope="session")
def runs(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    env = client_env(stack.metadata_url, stack.settings.root, tmp_path_factory.mktemp("mf-home"))
    outside = tmp_path_factory.mktemp("outside")
    hostile_env = {"HOSTILE_KEY": str(stack.settings.key_file), "HOSTILE_OUT": str(stack.settings.root / "leaked"),
                   "HOSTILE_TMP": str(outside / "written")}
    return Runs(
        linear=run_flow(env, FLOWS / "linear_flow.py", "--alpha", "4", "--label", "hi", "--tag", "ui-tag",
                        "--tag", "project:uitest"),
        branch=run_flow(env, FLOWS / "branch_flow.py"),
        foreach=run_flow(env, FLOWS / "foreach_flow.py", "--width", "5"),
        retry=run_flow(env, FLOWS / "retry_catch_flow.py"),
        failed=run_flow(env, FLOWS / "failing_flow.py", expect_ok=False),
        card=run_flow(env, UI_FLOWS / "ui_card_flow.py", cwd=stack.settings.datastore_dir),
        chatty=run_flow(env, FLOWS / "chatty_flow.py"),
        hostile=run_flow(env, UI_FLOWS / "hostile_flow.py", extra_env=hostile_env),
        outside=stack.settings.root / "leaked",
        tmp_target=outside / "written",
    )


@pytest.fixture(scope="session")
def untouched_datastore(stack: Stack, runs: Runs) -> Iterator[None]:
    """Every file and folder the flows wrote is the same after every API test, and nothing was added
    to their flows' folders. The live-update tests run flows of their own (GatedFlow) later in the
    session: a flow's folder that did not exist before may appear."""
    before = tree_checksum(stack.settings.datastore_dir)
    yield
    after = tree_checksum(stack.settings.datastore_dir)
    changed = sorted(path for path, sums in before.items() if after.get(path) != sums)
    flows_before = {Path(path).parts[:2] for path in before}

    def in_a_new_flow(path: str) -> bool:
        parts = Path(path).parts
        return len(parts) >= 2 and parts[0] == ".metaflow" and parts[:2] not in flows_before

    added = sorted(path for path in after if path not in before and not in_a_new_flow(path))
    assert not changed and not added, f"viewing changed the datastore: changed {changed[:10]}, added {added[:10]}"


@pytest.fixture()
def api(stack: Stack, runs: Runs, untouched_datastore: None) -> Iterator[Api]:
    with requests.Session() as http:
        yield Api(http, stack.api_url)
