"""Live updates at scale: --clients UI tabs, each holding the subscriptions a run page makes
(the run, its steps, its tasks, its metadata), while the rows of a --tasks-wide foreach are
written. Prints the web process's resident memory before and after, and the latency from each
task row written through the metadata service to its event at each tab, p50 and p99.

A stack (`mfcolab up --no-tunnel --ui native`) runs in a temporary folder. The rows are what a
foreach's tasks write first (its step row, then one task row per split), posted one after the
other with the metadata service's own routes, as fast as it answers; artifacts and metadata
rows are not written.

    .venv/bin/python scripts/bench_live_scale.py [--clients 50] [--tasks 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import requests
from bench_live import percentile
from ui_stack import say, ui_stack

FLOW = "BenchScaleFlow"
STEP = "train"


def resident_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def run_page(run: int) -> list[str]:
    """The subscriptions the UI's run page makes (metaflow-ui-contract.md, Part A §4.2)."""
    base = f"/flows/{FLOW}/runs/{run}"
    return [base, f"{base}/steps?_order=%2Bts_epoch&_limit=1000", f"{base}/tasks?_order=%2Bts_epoch&_limit=1000",
            f"{base}/metadata?step_name=start"]


class Tabs:
    """`count` WebSocket clients, each subscribed to a run page, noting when each task arrives."""

    def __init__(self, url: str, headers: dict[str, str], count: int, run: int) -> None:
        self.url, self.headers, self.count, self.run = url, headers, count, run
        self.arrivals: dict[str, list[float]] = {}  # task_id -> arrival time per tab
        self.errors: list[str] = []
        self._ready = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._tab(number)) for number in range(self.count)]
        deadline = time.monotonic() + 120
        while self._ready < self.count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self._ready} of {self.count} tabs subscribed")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the last SUBSCRIBE frames are read

    async def _tab(self, number: int) -> None:
        assert self._session is not None
        async with self._session.ws_connect(self.url, headers=self.headers, heartbeat=None) as ws:
            for index, resource in enumerate(run_page(self.run)):
                await ws.send_str(json.dumps({"type": "SUBSCRIBE", "uuid": f"t{number}-{index}", "resource": resource}))
            self._ready += 1
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT or not frame.data.startswith("{"):
                    continue
                event = json.loads(frame.data)
                if event.get("type") == "ERROR":
                    self.errors.append(event.get("message", ""))
                elif event.get("type") == "INSERT" and "/tasks" in event.get("resource", ""):
                    self.arrivals.setdefault(str(event["data"]["task_id"]), []).append(time.time())

    def delivered(self, task_ids: list[str]) -> bool:
        return all(len(self.arrivals.get(task_id, [])) >= self.count for task_id in task_ids)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def post(url: str, headers: dict[str, str]) -> dict[str, object]:
    answer = requests.post(url, json={"user_name": "bench", "tags": [], "system_tags": []}, headers=headers, timeout=60)
    answer.raise_for_status()
    result: dict[str, object] = answer.json()
    return result


async def foreach(tabs: Tabs, metadata: str, headers: dict[str, str], width: int) -> dict[str, float]:
    step = f"{metadata}/flows/{FLOW}/runs/{tabs.run}/steps/{STEP}"
    await asyncio.to_thread(post, f"{step}/step", headers)
    written: dict[str, float] = {}
    for number in range(width):
        at = time.time()
        task = await asyncio.to_thread(post, f"{step}/task", headers)
        written[str(task["task_id"])] = at
        if number % 200 == 199:
            say(f"{number + 1} of {width} task rows written")
    deadline = time.monotonic() + 300
    while not tabs.delivered(list(written)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return written


async def measure(url: str, metadata: str, headers: dict[str, str], clients: int, width: int, pid: int) -> None:
    run = int(str(post(f"{metadata}/flows/{FLOW}/run", headers)["run_number"]))
    tabs = Tabs(url, headers, clients, run)
    before = resident_mib(pid)
    await tabs.start()
    subscribed = resident_mib(pid)
    try:
        written = await foreach(tabs, metadata, headers, width)
        after = resident_mib(pid)
    finally:
        await tabs.stop()
    latencies = [at - written[task_id] for task_id, times in tabs.arrivals.items() if task_id in written for at in times]
    missing = clients * width - len(latencies)
    print(f"web process RSS: {before:.1f} MiB before, {subscribed:.1f} MiB with {clients} tabs subscribed, "
          f"{after:.1f} MiB after {width} tasks (peak {resident_mib(pid, 'VmHWM'):.1f} MiB)")
    if latencies:
        print(f"task events: {len(latencies)} of {clients * width}; latency p50 {percentile(latencies, 0.5) * 1000:.1f} ms,"
              f" p99 {percentile(latencies, 0.99) * 1000:.1f} ms")
    if missing:
        print(f"{missing} task events did not arrive within 300 s", file=sys.stderr)
    if tabs.errors:
        print(f"{len(tabs.errors)} subscriptions refused, e.g. {tabs.errors[0]}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    with ui_stack("mfcolab-bench-scale-") as stack:
        headers = {"x-api-key": stack.key}
        metadata = f"{stack.front}/metadata"
        requests.post(f"{metadata}/flows/{FLOW}", json={"user_name": "bench"}, headers=headers,
                      timeout=60).raise_for_status()
        say(f"{args.clients} run-page tabs, a {args.tasks}-task foreach")
        asyncio.run(measure(f"ws://127.0.0.1:{stack.port}/api/ws", metadata, headers, args.clients, args.tasks,
                            stack.web_pid()))


if __name__ == "__main__":
    main()
