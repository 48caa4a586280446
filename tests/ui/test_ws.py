"""The live-update socket `/api/ws` against the real stack with real flows, spoken to with
aiohttp's plain WebSocket client: ping/pong, subscriptions with filters, unsubscribe, replay
with `since`, bad messages, and a run whose runtime is killed turning failed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from ui_helpers import FLOWS, Stack, client_env

pytestmark = pytest.mark.slow

WAIT = 180.0  # bounded waits for events: flows on a busy machine


class Socket:
    """A WebSocket client that collects every event it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.texts: list[str] = []

    async def send(self, body: dict[str, Any] | str) -> None:
        await self.ws.send_str(body if isinstance(body, str) else json.dumps(body))

    async def subscribe(self, uuid: str, resource: str, since: float | None = None) -> None:
        body: dict[str, Any] = {"type": "SUBSCRIBE", "uuid": uuid, "resource": resource}
        if since is not None:
            body["since"] = since
        await self.send(body)

    async def next_frame(self, timeout: float) -> str | None:
        try:
            frame = await self.ws.receive(timeout=timeout)
        except TimeoutError:
            return None
        if frame.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"socket closed: {frame.type} {frame.data} {frame.extra}")
        self.texts.append(frame.data)
        if frame.data.startswith("{"):
            self.events.append(json.loads(frame.data))
        return str(frame.data)

    async def until(self, predicate: Any, what: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first event (old or new) for which predicate is true, waiting at most `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            left = deadline - time.monotonic()
            assert left > 0, f"no event {what} within {timeout} s; got {self.events[-5:]}"
            await self.next_frame(min(left, 1.0))

    async def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await self.next_frame(left)


@asynccontextmanager
async def connect(stack: Stack) -> AsyncIterator[Socket]:
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.api_url + "/ws") as ws:
        yield Socket(ws)


@pytest.fixture(scope="module")
def flow_env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return client_env(stack.metadata_url, stack.settings.root, tmp_path_factory.mktemp("mf-home-ws"))


class GatedRun:
    """A GatedFlow run in its own process group: it waits in `hold` until the gate file exists."""

    def __init__(self, env: dict[str, str], gate: Path) -> None:
        self.gate = gate
        self.proc = subprocess.Popen(
            [sys.executable, str(FLOWS / "gated_flow.py"), "--no-pylint", "run"], cwd=FLOWS,
            env={**env, "GATED_FLOW_GATE": str(gate)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)

    def open_gate(self) -> None:
        self.gate.touch()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def finish(self) -> str:
        output = self.proc.communicate(timeout=600)[0].decode(errors="replace")
        return output


@pytest.fixture()
def gated(flow_env: dict[str, str], tmp_path: Path) -> Iterator[GatedRun]:
    run = GatedRun(flow_env, tmp_path / "gate")
    yield run
    if run.proc.poll() is None:
        run.kill()


def http(stack: Stack, path: str) -> Any:
    resp = requests.get(stack.api_url + path, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_ping_gets_pong(stack: Stack) -> None:
    async def check() -> None:
        async with connect(stack) as socket:
            for _ in range(3):
                await socket.send("__ping__")
                assert await socket.next_frame(30) == "__pong__"

    asyncio.run(check())


BAD_MESSAGES = [
    "not json",
    "[1, 2]",
    '"__ping"',
    json.dumps({"type": "SUBSCRIBE"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": 5, "resource": "/runs"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "x" * 500, "resource": "/runs"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": 7}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": "runs"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": "/nothing/here"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": "/runs?_limit=-4"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": "/runs?run_number:gt=abc"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": "/runs?_order=nope"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": "/flows/F/runs/%00"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": "/runs", "since": "yesterday"}),
    json.dumps({"type": "SUBSCRIBE", "uuid": "a", "resource": "/runs", "since": True}),
    json.dumps({"type": "DELETE", "uuid": "a"}),
    json.dumps({"uuid": "a"}),
]


def test_a_bad_message_gets_an_error_frame_and_the_socket_keeps_serving(stack: Stack) -> None:
    async def check() -> None:
        async with connect(stack) as socket:
            for text in BAD_MESSAGES:
                await socket.send(text)
                frame = await socket.next_frame(30)
                assert frame is not None, text
                error = json.loads(frame)
                assert error["type"] == "ERROR" and error["message"], (text, error)
            await socket.ws.send_bytes(b"\x00\x01")  # binary frames are ignored
            await socket.send("__ping__")
            assert await socket.next_frame(30) == "__pong__"
            assert not any(e.get("type") in ("INSERT", "UPDATE") for e in socket.events)

    asyncio.run(check())


def test_an_oversized_message_closes_only_that_socket(stack: Stack) -> None:
    async def check() -> None:
        async with connect(stack) as big, connect(stack) as other:
            await big.send("x" * (128 * 1024))
            frame = await big.ws.receive(timeout=30)
            assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            await other.send("__ping__")
            assert await other.next_frame(30) == "__pong__"

    asyncio.run(check())


def test_a_flow_run_reaches_its_subscribers_with_filters_applied(stack: Stack, gated: GatedRun) -> None:
    async def check() -> None:
        async with connect(stack) as socket:
            await socket.subscribe("all", "/flows/GatedFlow/runs")
            await socket.subscribe("other-flow", "/runs?flow_id=NoSuchFlow")
            await socket.subscribe("not-running", "/flows/GatedFlow/runs?status=completed")
            await socket.subscribe("home", "/runs?flow_id=GatedFlow&status=running,completed")
            gated.proc.poll()
            inserted = await socket.until(lambda e: e["uuid"] == "all" and e["type"] == "INSERT", "run INSERT")
            run_number = inserted["data"]["run_number"]
            assert inserted["resource"] == "/flows/GatedFlow/runs"
            assert inserted["data"]["status"] == "running"
            run = f"/flows/GatedFlow/runs/{run_number}"
            await socket.subscribe("run", run)
            await socket.subscribe("tasks", run + "/tasks?_order=%2Bts_epoch&_limit=1000")
            await socket.subscribe("hold", run + "/tasks?step_name=hold")
            await socket.subscribe("meta", run + "/metadata?field_name=attempt")
            await socket.until(lambda e: e["uuid"] == "hold" and e["data"]["status"] == "running", "hold running")
            gated.open_gate()
            done = await socket.until(lambda e: e["uuid"] == "run" and e["data"]["status"] == "completed",
                                      "run completed")
            await socket.until(lambda e: e["uuid"] == "all" and e["data"]["status"] == "completed", "list completed")
            assert "Done!" in gated.finish()
            await socket.drain(2)

            # Each event's data is the object as the HTTP route for its resource shows it.
            assert done["data"] == http(stack, run)
            last_task = {}
            for e in socket.events:
                if e["uuid"] == "tasks":
                    last_task[(e["data"]["task_id"], e["data"]["attempt_id"])] = e["data"]
            listed = {(t["task_id"], t["attempt_id"]): t for t in http(stack, run + "/tasks?_limit=1000")}
            assert set(last_task) == set(listed)
            for key, task in last_task.items():
                assert {k: v for k, v in task.items() if k != "duration"} == \
                    {k: v for k, v in listed[key].items() if k != "duration"}
            assert {t["status"] for t in last_task.values()} == {"completed"}

            # Filters: each subscription got only what its query admits; DELETE is never sent.
            by_uuid: dict[str, list[dict[str, Any]]] = {}
            for e in socket.events:
                by_uuid.setdefault(e["uuid"], []).append(e)
            assert "other-flow" not in by_uuid
            assert {e["data"]["status"] for e in by_uuid["not-running"]} == {"completed"}
            assert {e["data"]["status"] for e in by_uuid["home"]} == {"running", "completed"}
            assert {e["data"]["step_name"] for e in by_uuid["hold"]} == {"hold"}
            assert {e["data"]["field_name"] for e in by_uuid["meta"]} == {"attempt"}
            assert {e["data"]["step_name"] for e in by_uuid["meta"]} >= {"start", "hold", "end"}
            assert {e["type"] for e in socket.events} <= {"INSERT", "UPDATE"}

    asyncio.run(check())


def test_unsubscribe_stops_events(stack: Stack, gated: GatedRun) -> None:
    async def check() -> None:
        async with connect(stack) as socket:
            await socket.subscribe("kept", "/flows/GatedFlow/runs")
            await socket.subscribe("dropped", "/flows/GatedFlow/runs")
            await socket.until(lambda e: e["uuid"] == "dropped", "an event before unsubscribing")
            await socket.send({"type": "UNSUBSCRIBE", "uuid": "dropped"})
            await socket.send("__ping__")
            while "__pong__" not in socket.texts:  # everything before the pong was sent before it
                await socket.next_frame(30)
            count = sum(1 for e in socket.events if e["uuid"] == "dropped")
            gated.open_gate()
            await socket.until(lambda e: e["uuid"] == "kept" and e["data"]["status"] == "completed", "completed")
            gated.finish()
            assert sum(1 for e in socket.events if e["uuid"] == "dropped") == count

    asyncio.run(check())


def test_a_reconnect_with_since_replays_what_it_missed(stack: Stack, gated: GatedRun) -> None:
    async def check() -> None:
        async with connect(stack) as first:
            await first.subscribe("runs", "/flows/GatedFlow/runs")
            inserted = await first.until(lambda e: e["uuid"] == "runs" and e["type"] == "INSERT", "run INSERT")
        disconnected = time.time()
        run = f"/flows/GatedFlow/runs/{inserted['data']['run_number']}"
        gated.open_gate()
        gated.finish()  # the run completes while no socket is open
        async with connect(stack) as again:
            await again.subscribe("runs", "/flows/GatedFlow/runs", since=disconnected)
            await again.subscribe("tasks", run + "/tasks", since=disconnected)
            await again.subscribe("late", "/flows/GatedFlow/runs", since=time.time() + 3600)
            replayed = await again.until(lambda e: e["uuid"] == "runs", "a replayed run")
            assert replayed["data"] == http(stack, run)
            assert replayed["data"]["status"] == "completed"
            end = await again.until(lambda e: e["uuid"] == "tasks" and e["data"]["step_name"] == "end", "end task")
            assert end["data"]["status"] == "completed"
            await again.drain(2)
            assert not [e for e in again.events if e["uuid"] == "late"]
            replayed_runs = [e for e in again.events if e["uuid"] == "runs"]
            assert len(replayed_runs) == 1  # the current state of each changed object, once

    asyncio.run(check())


def test_a_killed_run_turns_failed_for_subscribers_and_the_http_route(stack: Stack, gated: GatedRun) -> None:
    async def check() -> None:
        async with connect(stack) as socket:
            await socket.subscribe("runs", "/flows/GatedFlow/runs")
            inserted = await socket.until(lambda e: e["uuid"] == "runs" and e["type"] == "INSERT", "run INSERT")
            run = f"/flows/GatedFlow/runs/{inserted['data']['run_number']}"
            await socket.subscribe("run", run)
            await socket.subscribe("hold", run + "/steps/hold/tasks")
            await socket.until(lambda e: e["uuid"] == "hold" and e["data"]["status"] == "running", "hold running")
            gated.kill()  # the runtime and its task, SIGKILL: nothing records an end
            killed = time.time()
            failed = await socket.until(lambda e: e["uuid"] == "run" and e["data"]["status"] == "failed",
                                        "run failed")
            seen = time.time()
            task = await socket.until(lambda e: e["uuid"] == "hold" and e["data"]["status"] == "failed",
                                      "task failed")
            assert http(stack, run)["status"] == "failed"
            assert failed["data"]["finished_at"] == http(stack, run)["finished_at"]
            assert task["data"]["status"] == http(stack, run + "/steps/hold/tasks")[0]["status"]
            last_beat = failed["data"]["last_heartbeat_ts"]
            print(f"run failed event {seen - last_beat:.1f} s after its last heartbeat,"
                  f" {seen - killed:.1f} s after the kill")

    asyncio.run(check())


@pytest.fixture(scope="module")
def door(stack: Stack, pg_dsn: str) -> Iterator[tuple[str, str]]:
    """The front door with a key, the metadata service and the UI API behind it."""
    from ui_helpers import AppThread

    from mfcolab.web import frontdoor
    from mfcolab.service import create_app as create_service
    from mfcolab.service.database import DB_KEY
    from mfcolab.ui import create_app as create_ui

    key = "live-socket-test-key-0123456789"

    def build():  # type: ignore[no-untyped-def]
        service = create_service(pg_dsn, pool_min=1, pool_max=4)
        return frontdoor.create_app(key, service, api=create_ui(stack.settings, service[DB_KEY]))

    server = AppThread(build).start()
    yield server.url, key
    server.stop()


def test_the_front_door_refuses_a_socket_without_the_key(door: tuple[str, str]) -> None:
    url, key = door

    async def check() -> None:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"x-api-key": "wrong-key"}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    async with session.ws_connect(url + "/api/ws", headers=headers):
                        pass
                assert refused.value.status == 401
            async with session.ws_connect(url + "/api/ws", headers={"x-api-key": key}) as ws:
                await ws.send_str("__ping__")
                assert (await ws.receive(timeout=30)).data == "__pong__"

    asyncio.run(check())


def test_live_updates_survive_a_killed_listen_connection(stack: Stack, pg_dsn: str) -> None:
    """The LISTEN backend is terminated: the connection comes back by itself and events flow."""
    import psycopg2
    from helpers import wait_until

    def sql(text: str) -> list[tuple[Any, ...]]:
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute(text)
            return cur.fetchall() if cur.description else []

    def listeners() -> list[int]:
        return [row[0] for row in sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'mfcolab-ui-live'")]

    def new_run() -> int:
        return int(sql("INSERT INTO runs_v3 (flow_id, ts_epoch, user_name) VALUES ('ReconnectFlow',"
                       " (extract(epoch FROM now()) * 1000)::bigint, 'tester') RETURNING run_number")[0][0])

    sql("INSERT INTO flows_v3 (flow_id, ts_epoch) VALUES ('ReconnectFlow', 1) ON CONFLICT DO NOTHING")

    async def check() -> None:
        async with connect(stack) as socket:
            await socket.subscribe("runs", "/flows/ReconnectFlow/runs")
            first = new_run()
            await socket.until(lambda e: e["data"]["run_number"] == first, "the first run")
            before = listeners()  # this stack's, and those of other UI APIs on the same database
            assert before
            for pid in before:
                sql(f"SELECT pg_terminate_backend({pid})")
            await asyncio.to_thread(wait_until, lambda: len(set(listeners()) - set(before)) == len(before), 60, 0.2,
                                    "the LISTEN connections to come back")
            second = new_run()
            event = await socket.until(lambda e: e["data"]["run_number"] == second, "a run after the reconnect")
            assert event["type"] == "INSERT" and event["data"]["flow_id"] == "ReconnectFlow"

    asyncio.run(check())
