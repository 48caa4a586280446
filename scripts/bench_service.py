"""Benchmark of the metadata service's per-task write sequence.

The sequence a Metaflow task makes: create the task; post one metadata list of 5 fields;
post one artifact list of 3 artifacts; one heartbeat. It runs at 1 and 16 client threads
(keep-alive HTTP/1.1 connections, one per thread) and reports requests/s, p50 and p99. In the
same run, the same rows are written by raw psycopg2 from the same number of threads, one
commit per would-be request: how close the service gets to the database's own limit. Beside
each phase: the CPU share of the load generator, the service process and Postgres (/proc).

Two ways to run it:

    # self-contained: `mfcolab up --no-tunnel` in a temporary folder, requests through its front door
    python scripts/bench_service.py

    # against a running stack, e.g. the front door of `mfcolab up`
    python scripts/bench_service.py --url http://127.0.0.1:7860/metadata --key KEY \\
        --dsn postgresql://... --service-pid PID --pg-pid POSTMASTER_PID
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2

CLIENT_SYSTEM_TAGS = ["metaflow_version:2.19.39", "user:bench", "python_version:3.11.7", "runtime:dev"]
TICKS = os.sysconf("SC_CLK_TCK")


# --- CPU accounting from /proc ----------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2:].split()


def process_cpu(pid: int, *, with_reaped_children: bool = False) -> float:
    """CPU seconds of one process (all its threads)."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def tree_cpu(root_pid: int) -> float:
    """CPU seconds of a process, its exited children and its live children (Postgres:
    the postmaster and its backends)."""
    total = process_cpu(root_pid, with_reaped_children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except (FileNotFoundError, ProcessLookupError, ValueError, PermissionError):
            continue
        if int(fields[1]) == root_pid:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


@dataclass
class CpuProbe:
    service_pid: int | None
    pg_pid: int | None
    start: dict[str, float] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        return {
            "wall": time.monotonic(),
            "loadgen": process_cpu(os.getpid()),
            "service": process_cpu(self.service_pid) if self.service_pid else float("nan"),
            "postgres": tree_cpu(self.pg_pid) if self.pg_pid else float("nan"),
        }

    def begin(self) -> None:
        self.start = self.sample()

    def shares(self) -> dict[str, float]:
        """Percent of one core used by each party since begin()."""
        end = self.sample()
        wall = end["wall"] - self.start["wall"]
        return {k: 100.0 * (end[k] - self.start[k]) / wall for k in ("loadgen", "service", "postgres")}


# --- the HTTP client side ---------------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection with the headers the Metaflow client sends."""

    def __init__(self, base_url: str, key: str | None) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if key:
            self.headers["x-api-key"] = key
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.conn.request(method, self.prefix + path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


def metadata_body(flow: str, run: str, step: str) -> bytes:
    fields = [("attempt", "0", "attempt"), ("ds-type", "local", "ds-type"), ("ds-root", "/tmp/ds", "ds-root"),
              ("attempt_ok", "True", "internal_attempt_status"), ("foreach-stack", ["items=1"], "foreach-stack")]
    return json.dumps([
        {"flow_id": flow, "run_number": run, "step_name": step, "task_id": "0", "field_name": name,
         "value": value, "type": type_, "user_name": "bench", "tags": ["attempt_id:0"], "ts_epoch": 0}
        for name, value, type_ in fields
    ]).encode()


def artifact_body(flow: str, run: str, step: str) -> bytes:
    return json.dumps([
        {"flow_id": flow, "run_number": run, "step_name": step, "task_id": "0", "attempt_id": 0, "name": name,
         "content_type": "pickle-v4", "type": "metaflow.artifact", "sha": uuid.uuid4().hex, "ds_type": "local",
         "location": ":root:/tmp/ds", "user_name": "bench", "tags": [], "system_tags": [], "ts_epoch": 0}
        for name in ("name", "x", "values")
    ]).encode()


def prepare_run(base_url: str, key: str | None) -> tuple[str, str, str]:
    """A flow, a run and a step to hang the benchmark's tasks on."""
    conn = Connection(base_url, key)
    flow = f"BenchFlow{uuid.uuid4().hex[:8]}"
    status, body = conn.request("POST", f"/flows/{flow}", b"{}")
    assert status == 200, (status, body)
    status, body = conn.request("POST", f"/flows/{flow}/run", json.dumps(
        {"user_name": "bench", "tags": [], "system_tags": CLIENT_SYSTEM_TAGS}).encode())
    assert status == 200, (status, body)
    run = str(json.loads(body)["run_number"])
    status, body = conn.request("POST", f"/flows/{flow}/runs/{run}/steps/body/step", b"{}")
    assert status == 200, (status, body)
    conn.close()
    return flow, run, "body"


@dataclass
class Phase:
    name: str
    threads: int
    requests: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def cpu_per_request_us(self, who: str) -> float:
        return 10_000.0 * self.cpu[who] * self.seconds / max(self.requests, 1)

    @classmethod
    def combined(cls, slices: list[Phase]) -> Phase:
        """The slices of one engine at one thread count, as one phase (CPU weighted by time)."""
        seconds = sum(p.seconds for p in slices)
        cpu = {who: sum(p.cpu[who] * p.seconds for p in slices) / seconds for who in slices[0].cpu}
        return cls(slices[0].name, slices[0].threads, sum(p.requests for p in slices), seconds,
                   [lat for p in slices for lat in p.latencies], cpu, sum(p.errors for p in slices))

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _run_threads(worker: Any, threads: int, seconds: float, probe: CpuProbe, name: str) -> Phase:
    """Runs `worker(barrier, stop, measured)` in `threads` threads for `seconds`; workers keep
    their connections open until `measured` is set, so their server side is still counted."""
    stop, measured = threading.Event(), threading.Event()
    barrier = threading.Barrier(threads + 1)
    results: list[tuple[int, list[float], int]] = []
    lock = threading.Lock()

    def body() -> None:
        outcome = worker(barrier, stop, measured)
        with lock:
            results.append(outcome[:3])
        measured.wait(120)
        outcome[3]()

    pool = [threading.Thread(target=body, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    probe.begin()
    started = time.monotonic()
    time.sleep(seconds)
    stop.set()
    while len(results) < threads and any(t.is_alive() for t in pool):
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    cpu = probe.shares()
    measured.set()
    for thread in pool:
        thread.join(120)
    latencies = [lat for _, lats, _ in results for lat in lats]
    return Phase(name, threads, sum(r[0] for r in results), elapsed, latencies, cpu, sum(r[2] for r in results))


def service_phase(base_url: str, key: str | None, run: tuple[str, str, str], threads: int, seconds: float,
                  probe: CpuProbe) -> Phase:
    flow, run_number, step = run
    step_path = f"/flows/{flow}/runs/{run_number}/steps/{step}"
    task_body = json.dumps({"flow_id": flow, "run_number": run_number, "step_name": step, "user_name": "bench",
                            "tags": [], "system_tags": CLIENT_SYSTEM_TAGS, "ts_epoch": 0}).encode()
    meta, arts = metadata_body(flow, run_number, step), artifact_body(flow, run_number, step)

    def worker(barrier: threading.Barrier, stop: threading.Event, measured: threading.Event) -> tuple[Any, ...]:
        conn = Connection(base_url, key)
        latencies: list[float] = []
        errors = 0
        barrier.wait()
        clock = time.perf_counter
        while not stop.is_set():
            t0 = clock()
            status, body = conn.request("POST", step_path + "/task", task_body)
            t1 = clock()
            if status != 200:
                errors += 1
                continue
            task = f"{step_path}/tasks/{json.loads(body)['task_id']}"
            status_m, _ = conn.request("POST", task + "/metadata", meta)
            t2 = clock()
            status_a, _ = conn.request("POST", task + "/artifact", arts)
            t3 = clock()
            status_h, _ = conn.request("POST", task + "/heartbeat", b"{}")
            t4 = clock()
            errors += (status_m != 200) + (status_a != 200) + (status_h not in (200, 404))
            latencies += (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        return len(latencies), latencies, errors, conn.close

    return _run_threads(worker, threads, seconds, probe, "service")


def psycopg2_phase(dsn: str, run: tuple[str, str, str], threads: int, seconds: float, probe: CpuProbe) -> Phase:
    flow, run_number, step = run
    tags, sys_tags = json.dumps([]), json.dumps(CLIENT_SYSTEM_TAGS)
    meta_rows = [("attempt", "0", "attempt"), ("ds-type", "local", "ds-type"), ("ds-root", "/tmp/ds", "ds-root"),
                 ("attempt_ok", "True", "internal_attempt_status"), ("foreach-stack", '["items=1"]', "foreach-stack")]

    def worker(barrier: threading.Barrier, stop: threading.Event, measured: threading.Event) -> tuple[Any, ...]:
        conn = psycopg2.connect(dsn)
        cur = conn.cursor()
        latencies: list[float] = []
        barrier.wait()
        clock = time.perf_counter
        while not stop.is_set():
            now_ms, now_s = int(time.time() * 1000), int(time.time())
            t0 = clock()
            cur.execute(
                "INSERT INTO tasks_v3 (flow_id, run_number, step_name, user_name, tags, system_tags,"
                " last_heartbeat_ts, ts_epoch) VALUES (%s, %s, %s, 'bench', %s, %s, %s, %s) RETURNING task_id",
                (flow, int(run_number), step, tags, sys_tags, now_s, now_ms))
            task_id = cur.fetchone()[0]
            conn.commit()
            t1 = clock()
            values = [(flow, int(run_number), step, task_id, name, value, type_, now_ms)
                      for name, value, type_ in meta_rows]
            cur.execute(
                "INSERT INTO metadata_v3 (flow_id, run_number, step_name, task_id, field_name, value, type,"
                " user_name, tags, system_tags, ts_epoch) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, 'bench', '[\"attempt_id:0\"]', '[]', %s)"] * 5),
                [v for row in values for v in row])
            conn.commit()
            t2 = clock()
            arts = [(flow, int(run_number), step, task_id, name, uuid.uuid4().hex, now_ms)
                    for name in ("name", "x", "values")]
            cur.execute(
                "INSERT INTO artifact_v3 (flow_id, run_number, step_name, task_id, name, location, ds_type, sha,"
                " type, content_type, user_name, attempt_id, tags, system_tags, ts_epoch) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, ':root:/tmp/ds', 'local', %s, 'metaflow.artifact',"
                             " 'pickle-v4', 'bench', 0, '[]', '[]', %s)"] * 3)
                + " ON CONFLICT DO NOTHING",
                [v for row in arts for v in row])
            conn.commit()
            t3 = clock()
            cur.execute(
                "UPDATE tasks_v3 SET last_heartbeat_ts = %s WHERE task_id = %s"
                " AND (last_heartbeat_ts IS NULL OR last_heartbeat_ts <= %s)",
                (now_s, task_id, now_s - 10))
            conn.commit()
            t4 = clock()
            latencies += (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        return len(latencies), latencies, 0, conn.close

    return _run_threads(worker, threads, seconds, probe, "psycopg2")


# --- self-contained mode: a real stack started with `mfcolab up` -------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RealStack:
    """`mfcolab up --no-tunnel` in a temporary folder: the requests go through the real front door."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mfcolab-bench-"))
        self.folders = ["--root", str(self.tmp / "root"), "--local", str(self.tmp / "local")]
        self.url = self.key = self.dsn = ""
        self.pids: dict[str, int] = {}

    def mfcolab(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "mfcolab", *args, *self.folders], check=True,
                              capture_output=True, text=True).stdout

    def __enter__(self) -> RealStack:
        (self.tmp / "root").mkdir()
        port, pg_port = free_port(), free_port()
        try:
            self.mfcolab("up", "--port", str(port), "--pg-port", str(pg_port), "--no-tunnel")
        except BaseException:
            self.__exit__()
            raise
        status = json.loads(self.mfcolab("status", "--json"))
        self.pids = {c["name"]: c["pid"] for c in status["components"]}
        self.url = f"http://127.0.0.1:{port}/metadata"
        self.key = (self.tmp / "root" / "access_key").read_text().strip()
        password = (self.tmp / "root" / "db_password").read_text().strip()
        self.dsn = f"postgresql://postgres:{password}@127.0.0.1:{pg_port}/postgres"
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([sys.executable, "-m", "mfcolab", "down", *self.folders], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _pings(url: str) -> bool:
    try:
        conn = Connection(url, None)
        status, _ = conn.request("GET", "/ping")
        conn.close()
        return status == 200
    except OSError:
        return False


# --- report -----------------------------------------------------------------------------------

def report(pairs: list[tuple[Phase, Phase | None, list[float]]]) -> None:
    print()
    print(f"{'threads':>7} {'engine':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'cpu loadgen':>11} {'cpu service':>11} {'cpu pg':>7} {'svc us/req':>10} {'pg us/req':>9} {'errors':>6}")
    for service, raw, _ in pairs:
        for phase in (service, raw):
            if phase is None:
                continue
            cpu = phase.cpu
            print(f"{phase.threads:>7} {phase.name:>9} {phase.rate:>8.0f} {phase.percentile(0.5):>7.2f} "
                  f"{phase.percentile(0.99):>7.2f} {cpu['loadgen']:>10.0f}% {cpu['service']:>10.0f}% "
                  f"{cpu['postgres']:>6.0f}% {phase.cpu_per_request_us('service'):>10.0f} "
                  f"{phase.cpu_per_request_us('postgres'):>9.0f} {phase.errors:>6}")
    print()
    for service, raw, ratios in pairs:
        line = f"{service.threads:>2} threads: service {service.rate:.0f} req/s ({service.rate / 4:.0f} tasks/s)"
        if raw is not None:
            line += (f", psycopg2 {raw.rate:.0f} req/s ({raw.rate / 4:.0f} groups/s),"
                     f" service/psycopg2 = {service.rate / raw.rate:.2f}"
                     f" (rounds {min(ratios):.2f} to {max(ratios):.2f})")
        print(line)
    print("(cpu: percent of one core over the phase; this box has", os.cpu_count(), "cores)")


def bench(url: str, key: str | None, dsn: str | None, probe: CpuProbe, seconds: float,
          thread_counts: list[int], rounds: int) -> list[tuple[Phase, Phase | None, list[float]]]:
    """Per thread count, `rounds` slices of each engine, alternating (service first, then raw
    first, ...), so both see the same background: checkpoints, autovacuum, the mirror's bases."""
    run = prepare_run(url, key)
    service_phase(url, key, run, max(thread_counts), 1.0, probe)  # warm-up: connections, statements
    pairs = []
    for threads in thread_counts:
        services: list[Phase] = []
        raws: list[Phase] = []
        for round_number in range(rounds):
            order = ("service", "raw") if round_number % 2 == 0 else ("raw", "service")
            for engine in order:
                if engine == "service":
                    services.append(service_phase(url, key, run, threads, seconds / rounds, probe))
                elif dsn:
                    raws.append(psycopg2_phase(dsn, run, threads, seconds / rounds, probe))
        ratios = [s.rate / r.rate for s, r in zip(services, raws)]
        pairs.append((Phase.combined(services), Phase.combined(raws) if raws else None, ratios))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="service base URL (e.g. http://127.0.0.1:7860/metadata); "
                                      "without it, a self-contained stack is started")
    parser.add_argument("--key", help="access key, sent as x-api-key")
    parser.add_argument("--dsn", help="Postgres DSN for the raw psycopg2 comparison")
    parser.add_argument("--service-pid", type=int, help="pid of the process serving the service (CPU share)")
    parser.add_argument("--pg-pid", type=int, help="pid of the Postgres postmaster (CPU share)")
    parser.add_argument("--seconds", type=float, default=12.0, help="time per engine and thread count")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices the time is cut into")
    parser.add_argument("--threads", default="1,16", help="comma-separated client thread counts")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    thread_counts = [int(n) for n in args.threads.split(",")]
    if args.url:
        probe = CpuProbe(args.service_pid, args.pg_pid)
        pairs = bench(args.url, args.key, args.dsn, probe, args.seconds, thread_counts, args.rounds)
    else:
        with RealStack() as stack:
            probe = CpuProbe(stack.pids["web"], stack.pids["postgres"])
            pairs = bench(stack.url, stack.key, stack.dsn, probe, args.seconds, thread_counts, args.rounds)
    report(pairs)
    if args.json:
        args.json.write_text(json.dumps([
            {"threads": p.threads, "engine": p.name, "requests_per_s": p.rate, "p50_ms": p.percentile(0.5),
             "p99_ms": p.percentile(0.99), "cpu_percent": p.cpu, "errors": p.errors,
             "service_cpu_us_per_request": p.cpu_per_request_us("service"),
             "postgres_cpu_us_per_request": p.cpu_per_request_us("postgres")}
            for service, raw, _ in pairs for p in (service, raw) if p is not None
        ], indent=2))


if __name__ == "__main__":
    main()
