"""A socket that stops reading never holds up the others or the metadata service: it carries 500
subscriptions to a flow's runs and reads nothing while runs are created; a second socket gets
every run, the metadata service answers, and the stalled socket is closed (1013) once its outbox
is full."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
import requests
from test_ws import connect
from ui_helpers import Stack

from mfcolab.ui.websocket import OUTBOX_MAX, SUBSCRIPTIONS_MAX

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skip(reason="unfinished: its first run timed out after 600 s and the cause (the test "
                     "or the hub) is not known yet; see docs/ui-live.md, Not done"),
]

FLOW = "StalledReaderFlow"
RUNS = 40  # x 500 subscriptions: twice the frames a stalled socket's outbox holds


def create_run(stack: Stack) -> int:
    body = {"user_name": "tester", "tags": [], "system_tags": ["metaflow_version:2.19.39"]}
    resp = requests.post(f"{stack.metadata_url}/flows/{FLOW}/run", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["run_number"])


def test_a_socket_that_stops_reading_holds_up_nobody(stack: Stack) -> None:
    assert RUNS * SUBSCRIPTIONS_MAX >= 2 * OUTBOX_MAX
    requests.post(f"{stack.metadata_url}/flows/{FLOW}", json={"user_name": "tester"}, timeout=60)

    async def check() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(stack.api_url + "/ws") as stalled:
            for number in range(SUBSCRIPTIONS_MAX):
                await stalled.send_str(json.dumps({"type": "SUBSCRIBE", "uuid": f"s{number}",
                                                   "resource": f"/flows/{FLOW}/runs"}))
            # From here on `stalled` is never read: aiohttp stops reading its connection once
            # 64 KB wait, and the kernel's buffers fill up behind it.
            async with connect(stack) as reader:
                await reader.subscribe("r", f"/flows/{FLOW}/runs")
                await reader.send("__ping__")
                created: list[int] = []
                for _ in range(RUNS):
                    created.append(await asyncio.to_thread(create_run, stack))
                    ping = await asyncio.to_thread(requests.get, stack.metadata_url + "/ping", timeout=60)
                    assert ping.status_code == 200
                for run_number in created:
                    await reader.until(lambda e, n=run_number: e.get("uuid") == "r" and e["data"]["run_number"] == n,
                                       f"run {run_number} at the reading socket")
            deadline = time.monotonic() + 300
            closed: Any = None
            while closed is None and time.monotonic() < deadline:
                frame = await stalled.receive(timeout=deadline - time.monotonic())
                if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    closed = frame
            assert closed is not None and stalled.close_code == 1013, (closed, stalled.close_code)

    asyncio.run(check())
