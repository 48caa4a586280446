"""A foreach-of-100 flow with `--metadata service` through the front door versus `--metadata local`.

Starts a real stack (`mfcolab up --no-tunnel` in a temporary folder), then alternates the two
modes for `--rounds` rounds, measuring wall time per run and, for service runs, the CPU seconds
the web process (front door + native service) and Postgres spent, read from /proc.

    .venv/bin/python scripts/bench_flow.py [--rounds 3] [--width 100] [--max-workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOW = REPO / "tests" / "flows" / "foreach_flow.py"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_pids(postmaster: int) -> list[int]:
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass  # a backend that ended meanwhile
    return total


def mfcolab(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run([sys.executable, "-m", "mfcolab", *args], check=True, capture_output=True, text=True, env=env).stdout


def run_flow(env: dict[str, str], cwd: Path, width: int, workers: int, metadata: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(FLOW), "--no-pylint", "--metadata", metadata, "run", "--width", str(width),
                    "--max-workers", str(workers)], check=True, capture_output=True, env=env, cwd=cwd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--max-workers", type=int, default=8)
    args = parser.parse_args()
    tasks_per_run = args.width + 4  # _parameters, start, the foreach tasks, join, end

    with tempfile.TemporaryDirectory(prefix="mfcolab-bench-flow-") as tmp_name:
        tmp = Path(tmp_name)
        folders = ["--root", str(tmp / "root"), "--local", str(tmp / "local")]
        (tmp / "root").mkdir()
        mfcolab("up", *folders, "--port", str(free_port()), "--pg-port", str(free_port()), "--no-tunnel")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
            env.update(METAFLOW_HOME=str(tmp / "metaflow-home"), USERNAME="bench")
            mfcolab("connect", "--root", str(tmp / "root"), env=env)
            env["METAFLOW_PROFILE"] = "mfcolab"
            status = json.loads(mfcolab("status", *folders, "--json"))
            pids = {c["name"]: c["pid"] for c in status["components"]}
            service_times, local_times, service_cpu, pg_cpu = [], [], [], []
            run_flow(env, tmp, 4, args.max_workers, "service")  # warm-up: imports, first flow registration
            for round_number in range(args.rounds):
                web_before = cpu_seconds(pids["web"])
                pg_before = total_cpu(postgres_pids(pids["postgres"]))
                service_times.append(run_flow(env, tmp, args.width, args.max_workers, "service"))
                service_cpu.append(cpu_seconds(pids["web"]) - web_before)
                pg_cpu.append(total_cpu(postgres_pids(pids["postgres"])) - pg_before)
                local_times.append(run_flow(env, tmp, args.width, args.max_workers, "local"))
                print(f"round {round_number + 1}: service {service_times[-1]:.1f} s, local {local_times[-1]:.1f} s, "
                      f"web CPU {service_cpu[-1]:.2f} s, Postgres CPU {pg_cpu[-1]:.2f} s", file=sys.stderr)
        finally:
            mfcolab("down", *folders)

    med = statistics.median
    ratio = med(service_times) / med(local_times)
    per_task_ms = med(service_cpu) / tasks_per_run * 1000
    pg_per_task_ms = med(pg_cpu) / tasks_per_run * 1000
    print(f"foreach of {args.width}, --max-workers {args.max_workers}, {args.rounds} rounds alternating:")
    print(f"  wall time: service {med(service_times):.1f} s, local {med(local_times):.1f} s, ratio {ratio:.2f} (target <= 2.0)")
    print(f"  service CPU per task: {per_task_ms:.2f} ms (target <= 5 ms); Postgres CPU per task: {pg_per_task_ms:.2f} ms")


if __name__ == "__main__":
    main()
