"""The live socket against upstream's UI backend (metaflow-service 2.5.1, its LISTEN and
WebSocket on) on the same database during the same flow: the same subscriptions on both, and
each object both send compared field by field. Every difference allowed is listed in
docs/ui.md ("Differences from the upstream backend") and docs/ui-live.md."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from ui_helpers import Stack, client_env
from helpers import free_port
from oracle import UpstreamBackend, build_venv
from test_oracle import STATUS_TIMES
from test_ws import WAIT, GatedRun, Socket, connect

pytestmark = pytest.mark.slow

# Fields upstream's task rows carry and mfcolab's do not, and a task's start where upstream has none.
TASK_ONLY_UPSTREAM = {"task_ok", "foreach_label"}
DELIBERATE = STATUS_TIMES | TASK_ONLY_UPSTREAM | {"started_at"}


@pytest.fixture(scope="module")
def upstream_ws(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    build_venv()
    parts = urlsplit(pg_dsn)
    work = tmp_path_factory.mktemp("ws-oracle")
    backend = UpstreamBackend({"host": parts.hostname or "127.0.0.1", "port": str(parts.port),
                               "user": parts.username or "postgres", "password": parts.password or "",
                               "dbname": (parts.path or "/postgres")[1:]}, free_port(), work / "backend.log")
    for name in ("FEATURE_DB_LISTEN_DISABLE", "FEATURE_WS_DISABLE"):
        backend.env[name] = "0"
    backend.start(work)
    yield backend.url.replace("http", "ws", 1) + "/ws"
    backend.stop()


@pytest.fixture(scope="module")
def flow_env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return client_env(stack.metadata_url, stack.settings.root, tmp_path_factory.mktemp("mf-home-ws-oracle"))


def latest(socket: Socket, uuid: str, key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    found = {}
    for event in socket.events:
        if event["uuid"] == uuid:
            found[tuple(event["data"][k] for k in key)] = event["data"]
    return found


def differences(ours: dict[Any, dict[str, Any]], theirs: dict[Any, dict[str, Any]]) -> list[str]:
    diffs = []
    for at, row in theirs.items():
        if at not in ours:
            diffs.append(f"{at}: upstream sent it, mfcolab did not")
            continue
        for field, value in row.items():
            if field not in DELIBERATE and ours[at].get(field) != value:
                diffs.append(f"{at} {field}: ours {ours[at].get(field)!r}, upstream {value!r}")
    return diffs


def test_the_same_subscriptions_get_the_same_objects_as_from_upstream(
        stack: Stack, upstream_ws: str, flow_env: dict[str, str], tmp_path: Path) -> None:
    async def check() -> None:
        async with connect(stack) as ours, aiohttp.ClientSession() as session, \
                session.ws_connect(upstream_ws) as ws:
            theirs = Socket(ws)
            for socket in (ours, theirs):
                await socket.subscribe("runs", "/flows/GatedFlow/runs")
            run = GatedRun(flow_env, tmp_path / "gate")
            try:
                inserted = await ours.until(lambda e: e["uuid"] == "runs" and e["type"] == "INSERT", "our INSERT")
                number = inserted["data"]["run_number"]
                await theirs.until(lambda e: e["uuid"] == "runs" and e["data"]["run_number"] == number,
                                   "upstream's INSERT")
                path = f"/flows/GatedFlow/runs/{number}/tasks?_order=%2Bts_epoch&_limit=1000"
                for socket in (ours, theirs):
                    await socket.subscribe("tasks", path)
                    await socket.subscribe("metadata", f"/flows/GatedFlow/runs/{number}/metadata")
                await ours.until(lambda e: e["uuid"] == "tasks" and e["data"]["step_name"] == "hold"
                                 and e["data"]["status"] == "running", "hold running")
                run.open_gate()
                await ours.until(lambda e: e["uuid"] == "runs" and e["data"]["status"] == "completed", "completed")
                await theirs.until(lambda e: e["uuid"] == "tasks" and e["data"]["step_name"] == "end",
                                   "upstream's end task", timeout=WAIT)
                run.finish()
                await asyncio.gather(ours.drain(3), theirs.drain(3))
            finally:
                if run.proc.poll() is None:
                    run.kill()
            run_key = ("flow_id", "run_number")
            task_key = ("step_name", "task_id", "attempt_id")
            diffs = differences(latest(ours, "runs", run_key), latest(theirs, "runs", run_key))
            diffs += differences(latest(ours, "tasks", task_key), latest(theirs, "tasks", task_key))
            diffs += differences(latest(ours, "metadata", ("id",)), latest(theirs, "metadata", ("id",)))
            assert latest(theirs, "runs", run_key) and len(latest(theirs, "tasks", task_key)) >= 3, theirs.events
            assert latest(theirs, "metadata", ("id",)), theirs.events
            assert not diffs, "\n".join(diffs)

    asyncio.run(check())
