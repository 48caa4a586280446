"""What one small request costs the serving process in CPU, back to back and one at a time.

In the foreach benchmark each task is a new process that sends a request now and then and
works in between; on a 2-core box shared with 8 such processes, every request meets cold
caches. This script measures that cost directly, side by side in one run, for three servers
answering the per-task write sequence (task create, metadata, artifacts, heartbeat) on one
keep-alive connection:

  - mfcolab: the real front door + native service of `mfcolab up --no-tunnel` (key checked,
    rows written to Postgres);
  - aiohttp: a bare aiohttp application that reads the body and answers a constant JSON body,
    the floor of any service built on aiohttp;
  - +asyncpg: the same, plus one `SELECT $1` through an asyncpg pool on the stack's Postgres,
    the floor of any such service that touches its database once per request;
  - asyncio: a bare asyncio protocol that answers without parsing, the floor of Python itself.

Each server gets `--requests` requests back to back, then the same number with `--pause-ms`
between them, for `--rounds` rounds in turn. CPU comes from /proc/<pid>/schedstat.

    .venv/bin/python scripts/bench_request_cost.py [--pause-ms 30] [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from collections import defaultdict
from typing import Any

from bench_service import CLIENT_SYSTEM_TAGS, Connection, RealStack, artifact_body, free_port, metadata_body, prepare_run

CONSTANT = b'{"task_id": 1}'


def serve_bare_aiohttp(port: int) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=CONSTANT, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_aiohttp_asyncpg(port: int, dsn: str) -> None:
    import asyncpg
    from aiohttp import web

    pool_key = web.AppKey("pool", asyncpg.Pool)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await request.app[pool_key].fetchval("SELECT $1::text", "x")
        return web.Response(body=CONSTANT, content_type="application/json")

    async def pool(app: web.Application) -> Any:
        app[pool_key] = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
        yield
        await app[pool_key].close()

    app = web.Application()
    app.cleanup_ctx.append(pool)
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_bare_asyncio(port: int) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(CONSTANT), CONSTANT)

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if b"\r\n\r\n" in data:  # the requests here arrive in one segment each
                self.transport.write(reply)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as handle:
        return int(handle.read().split()[0])


class Target:
    def __init__(self, name: str, url: str, key: str | None, pid: int) -> None:
        self.name, self.url, self.key, self.pid = name, url, key, pid
        flow, run, step = prepare_run(url, key) if name == "mfcolab" else ("BareFlow", "1", "body")
        self.step_path = f"/flows/{flow}/runs/{run}/steps/{step}"
        self.task_body = json.dumps({"flow_id": flow, "run_number": run, "step_name": step, "user_name": "bench",
                                     "tags": [], "system_tags": CLIENT_SYSTEM_TAGS, "ts_epoch": 0}).encode()
        self.meta, self.arts = metadata_body(flow, run, step), artifact_body(flow, run, step)

    def cost_us(self, requests: int, pause: float) -> float:
        """CPU microseconds per request over `requests` requests, `pause` seconds apart."""
        conn = Connection(self.url, self.key)
        sent = 0
        before = cpu_ns(self.pid)
        while sent < requests:
            status, body = conn.request("POST", self.step_path + "/task", self.task_body)
            assert status == 200, (self.name, status, body)
            task = f"{self.step_path}/tasks/{json.loads(body)['task_id']}"
            for path, payload in (("/metadata", self.meta), ("/artifact", self.arts), ("/heartbeat", b"{}")):
                time.sleep(pause)
                status, body = conn.request("POST", task + path, payload)
                assert status in (200, 404) if path == "/heartbeat" else status == 200, (self.name, path, status, body)
            time.sleep(pause)
            sent += 4
        used = cpu_ns(self.pid) - before
        conn.close()
        return used / sent / 1000


def start_bare(target: Any, *args: Any) -> tuple[multiprocessing.Process, str]:
    port = free_port()
    process = multiprocessing.Process(target=target, args=(port, *args), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}/metadata"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            probe = Connection(url, None)
            probe.request("GET", "/ping")
            probe.close()
            return process, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{target.__name__} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pause-ms", type=float, default=30.0, help="pause between requests in the paced mode")
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with RealStack() as stack:
        bare = {"aiohttp": start_bare(serve_bare_aiohttp), "+asyncpg": start_bare(serve_aiohttp_asyncpg, stack.dsn),
                "asyncio": start_bare(serve_bare_asyncio)}
        try:
            targets = [Target("mfcolab", stack.url, stack.key, stack.pids["web"])]
            targets += [Target(name, url, None, process.pid or 0) for name, (process, url) in bare.items()]
            for target in targets:
                target.cost_us(40, 0.0)  # warm-up: connections, prepared statements
            costs: dict[tuple[str, str], list[float]] = defaultdict(list)
            for _ in range(args.rounds):
                for target in targets:
                    costs[target.name, "back to back"].append(target.cost_us(args.requests, 0.0))
                    costs[target.name, "paced"].append(target.cost_us(args.requests, args.pause_ms / 1000))
        finally:
            for process, _ in bare.values():
                process.terminate()

    med = {key: statistics.median(values) for key, values in costs.items()}
    print(f"CPU per request of the serving process, median of {args.rounds} rounds "
          f"({args.requests} requests each; paced: {args.pause_ms:.0f} ms apart):")
    print(f"{'server':>8} {'back to back':>13} {'paced':>8} {'paced/b2b':>10} {'paced vs aiohttp':>17}")
    for name in ("mfcolab", "+asyncpg", "aiohttp", "asyncio"):
        b2b, paced = med[name, "back to back"], med[name, "paced"]
        print(f"{name:>8} {b2b:>10.0f} us {paced:>5.0f} us {paced / b2b:>10.2f} {paced / med['aiohttp', 'paced']:>17.2f}")


if __name__ == "__main__":
    main()
