"""Live-update latency: from a run row written through the metadata service to the event at
each subscribed WebSocket client, for mfcolab's `/api/ws` and upstream's UI backend
(metaflow-service 2.5.1, run natively as in tests/ui/oracle.py with its realtime parts on), on
the same database, side by side in one run. Then the CPU of each web process while the
clients stay subscribed and idle.

A stack (`mfcolab up --no-tunnel --ui native`) runs in a temporary folder. For 1 and for
--clients clients per backend, each client subscribes to `/flows/BenchLiveFlow/runs`; then
--rows runs are created one at a time with the metadata service's own POST (what a flow's
`run` does), each after the previous one reached every client. Prints p50 and p99 of the
latency per backend and client count, and each process's CPU over --idle seconds.

    .venv/bin/python scripts/bench_live.py [--clients 50] [--rows 40] [--idle 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import requests
from ui_stack import UpstreamBackend, free_port, say, ui_stack

from mfcolab.web.component import database_dsn

FLOW = "BenchLiveFlow"
RESOURCE = f"/flows/{FLOW}/runs"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class Clients:
    """`count` WebSocket clients of one backend, each subscribed to RESOURCE, noting arrivals."""

    def __init__(self, name: str, url: str, headers: dict[str, str], count: int) -> None:
        self.name, self.url, self.headers, self.count = name, url, headers, count
        self.arrivals: dict[int, list[float]] = {}  # run_number -> arrival time per client
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ready = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._client(number)) for number in range(self.count)]
        deadline = time.monotonic() + 120
        while self._ready < self.count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: only {self._ready} of {self.count} clients subscribed")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the last SUBSCRIBE frames are read

    async def _client(self, number: int) -> None:
        assert self._session is not None
        async with self._session.ws_connect(self.url, headers=self.headers, heartbeat=None) as ws:
            await ws.send_str(json.dumps({"type": "SUBSCRIBE", "uuid": f"c{number}", "resource": RESOURCE}))
            self._ready += 1
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT or not frame.data.startswith("{"):
                    continue
                event = json.loads(frame.data)
                if event.get("type") == "INSERT":
                    self.arrivals.setdefault(int(event["data"]["run_number"]), []).append(time.time())

    def complete(self, run_number: int) -> bool:
        return len(self.arrivals.get(run_number, [])) >= self.count

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


async def measure(backends: list[Clients], metadata: str, headers: dict[str, str], rows: int) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {b.name: [] for b in backends}
    for backend in backends:
        await backend.start()
    try:
        for _ in range(rows):
            written = time.time()
            answer = await asyncio.to_thread(requests.post, f"{metadata}/flows/{FLOW}/run",
                                             json={"user_name": "bench", "tags": [], "system_tags": []},
                                             headers=headers, timeout=60)
            answer.raise_for_status()
            run_number = int(answer.json()["run_number"])
            deadline = time.monotonic() + 60
            while not all(b.complete(run_number) for b in backends) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            for backend in backends:
                latencies[backend.name] += [at - written for at in backend.arrivals.get(run_number, [])]
                missing = backend.count - len(backend.arrivals.get(run_number, []))
                if missing:
                    print(f"  {backend.name}: {missing} clients got no event for run {run_number} in 60 s",
                          file=sys.stderr)
            await asyncio.sleep(0.2)
    finally:
        for backend in backends:
            await backend.stop()
    return latencies


async def idle_cpu(backends: list[Clients], pids: dict[str, int], seconds: float) -> dict[str, float]:
    for backend in backends:
        await backend.start()
    try:
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(seconds)
        return {name: (cpu_seconds(pid) - before[name]) / seconds * 100 for name, pid in pids.items()}
    finally:
        for backend in backends:
            await backend.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()

    with ui_stack("mfcolab-bench-live-") as stack:
        tmp, port, pg_port = stack.tmp, stack.port, stack.pg_port
        upstream = None
        try:
            headers = {"x-api-key": stack.key}
            front = stack.front
            requests.post(f"{front}/metadata/flows/{FLOW}", json={"user_name": "bench"}, headers=headers,
                          timeout=60).raise_for_status()
            parts = requests.utils.urlparse(database_dsn(stack.settings))
            upstream = UpstreamBackend({"host": "127.0.0.1", "port": str(pg_port), "user": parts.username or "",
                                        "password": parts.password or "", "dbname": parts.path.lstrip("/")},
                                       free_port(), tmp / "upstream.log")
            for name in ("FEATURE_DB_LISTEN_DISABLE", "FEATURE_WS_DISABLE", "FEATURE_HEARTBEAT_DISABLE"):
                upstream.env[name] = "0"
            upstream.start(tmp)
            assert upstream.proc is not None
            ws_url = upstream.url.replace("http", "ws", 1) + "/ws"
            pids = {"mfcolab": stack.web_pid(), "upstream": upstream.proc.pid}
            print(f"{'clients':>7} {'backend':>9} {'events':>7} {'p50 ms':>8} {'p99 ms':>8}")
            for count in (1, args.clients):
                say(f"latency with {count} client(s) per backend, {args.rows} runs")
                backends = [Clients("mfcolab", f"ws://127.0.0.1:{port}/api/ws", headers, count),
                            Clients("upstream", ws_url, {}, count)]
                latencies = asyncio.run(measure(backends, f"{front}/metadata", headers, args.rows))
                for name, values in latencies.items():
                    if values:
                        print(f"{count:>7} {name:>9} {len(values):>7} {percentile(values, 0.5) * 1000:>8.1f}"
                              f" {percentile(values, 0.99) * 1000:>8.1f}")
                    else:
                        print(f"{count:>7} {name:>9} {0:>7} {'-':>8} {'-':>8}")
                ratio = (statistics.median(latencies["upstream"]) / statistics.median(latencies["mfcolab"])
                         if latencies["upstream"] and latencies["mfcolab"] else float("nan"))
                print(f"{count:>7} {'ratio':>9} upstream p50 / mfcolab p50 = {ratio:.2f}")
            say(f"CPU with {args.clients} idle subscribed clients per backend, {args.idle:.0f} s")
            backends = [Clients("mfcolab", f"ws://127.0.0.1:{port}/api/ws", headers, args.clients),
                        Clients("upstream", ws_url, {}, args.clients)]
            cpu = asyncio.run(idle_cpu(backends, pids, args.idle))
            for name, share in cpu.items():
                print(f"idle CPU, {args.clients} clients, {name}: {share:.2f} % of one core")
        finally:
            if upstream is not None:
                upstream.stop()


if __name__ == "__main__":
    main()
