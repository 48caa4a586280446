"""How late can an in-process heartbeat be while the task's main thread holds the GIL?

Runs mfcolab's `HeartbeatThread` against a small HTTP server in another process (so the server
never waits for this process's GIL), asking for a beat every `--interval` seconds. Meanwhile the
main thread runs, one after another, calls that hold the GIL for their whole length (C code that
never releases it) and, for comparison, a pure-Python busy loop. For each it prints how long the
call took and the longest gap between two beats seen by the server during it, minus the interval:
that is how late the heartbeat was.

    .venv/bin/python scripts/bench_heartbeat_gil.py [--interval 1] [--scale 1]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from metaflow_extensions.mfcolab.plugins.heartbeat_thread import HeartbeatThread

SERVER = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
interval, log = float(sys.argv[1]), open(sys.argv[2], "a", buffering=1)
body = json.dumps(json.dumps({"wait_time_in_seconds": interval})).encode()
class Beat(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        log.write(f"{time.time()}\n")
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
server = HTTPServer(("127.0.0.1", 0), Beat)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def gil_holders(scale: int) -> dict[str, Callable[[], object]]:
    """Named calls; all but the last hold the GIL from start to end."""
    ints = [random.random() for _ in range(3_000_000 * scale)]
    nested = [{"id": i, "values": list(range(20))} for i in range(400_000 * scale)]
    document = json.dumps(nested)
    return {
        f"sorted() of {len(ints):,} floats": lambda: sorted(ints),
        f"pickle.dumps of {len(nested):,} small dicts (an artifact)": lambda: pickle.dumps(nested),
        f"pickle.loads of the same ({len(pickle.dumps(nested)) // 2**20} MiB)": lambda: pickle.loads(pickle.dumps(nested)),
        f"json.loads of {len(document) // 2**20} MiB": lambda: json.loads(document),
        "regex with catastrophic backtracking": lambda: re.match(r"(a+)+$", "a" * (23 + scale) + "b"),
        "pure-Python loop (releases the GIL every 5 ms)": lambda: sum(i * i for i in range(8_000_000 * scale)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    log = Path(f"/tmp/mfcolab-bench-gil-{time.time_ns()}.log")
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.interval), str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        calls = gil_holders(args.scale)
        beat = HeartbeatThread(f"http://127.0.0.1:{port}/beat", {})
        beat.start()
        time.sleep(3 * args.interval)
        print(f"heartbeat every {args.interval:g} s; lateness = longest gap between beats during the call - interval")
        print(f"  {'call':<58} {'call s':>7} {'late s':>7}")
        for name, call in calls.items():
            start = time.time()
            call()
            end = time.time()
            time.sleep(2 * args.interval)  # the beat that was held back arrives
            beats = [float(line) for line in log.read_text().split()]
            during = [t for t in beats if start - args.interval <= t <= end + 2 * args.interval]
            gap = max((b - a for a, b in pairwise(during)), default=float("nan"))
            print(f"  {name:<58} {end - start:>7.2f} {max(0.0, gap - args.interval):>7.2f}")
        beat.terminate()
    finally:
        server.kill()
        server.wait()
        log.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
