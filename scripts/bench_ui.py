"""The requests the Metaflow UI makes to open three pages, timed against mfcolab's UI API and
upstream's UI backend (metaflow-service 2.5.1, run natively as in tests/ui/oracle.py), side by
side in one run:

    home   /runs (30 rows) then each row's start-step metadata, over --runs runs; and the same
           number of requests to /version, the floor set by the requests themselves
    run    a run of a foreach with --width tasks: the run, steps, tasks fetched in full, the DAG,
           the start-step metadata, the parameters and the local-datastore probe
    task   a task whose stdout has --lines lines: the first log page, then the download

A real stack (`mfcolab up --no-tunnel` in a temporary folder) runs LinearFlow, ForeachFlow and a
long-log flow for real; the database is then grown with copies of those real rows (runs cloned
for the home page, foreach tasks cloned for the run page). Upstream reads a copy of the database
and of the datastore (its log route moves log files out of a local datastore). Requests go out
six at a time, as a browser sends them. Prints each page's median over --rounds (after one
warm-up), the ratio, and the web process's memory.

    .venv/bin/python scripts/bench_ui.py [--rounds 9] [--runs 10000] [--width 1000] [--lines 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import psycopg2
import requests
from ui_stack import UpstreamBackend, free_port, mfcolab, say, ui_stack

from mfcolab import credentials
from mfcolab.postgres import dsn_for, pg_binary

FLOWS = Path(__file__).resolve().parent.parent / "tests" / "flows"

BROWSER_CONNECTIONS = 6
HOME_ROWS = 30

LONG_LOG_FLOW = '''
from metaflow import FlowSpec, Parameter, step


class LongLogFlow(FlowSpec):
    lines = Parameter("lines", default=100000)

    @step
    def start(self):
        for number in range(1, self.lines + 1):
            print(f"log line {number}")
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    LongLogFlow()
'''


def run_flow(env: dict[str, str], cwd: Path, flow: Path, *args: str) -> str:
    """Run a flow for real; its run number."""
    out = subprocess.run([sys.executable, str(flow), "--no-pylint", "run", *args], check=True, capture_output=True,
                         text=True, env=env, cwd=cwd)
    for line in (out.stderr + out.stdout).splitlines():
        if "[" in line and "/start/" in line:
            return line.split("[", 1)[1].split("/", 1)[0]
    raise RuntimeError(f"no run id in the output of {flow.name}")


# ---------------------------------------------------------------- growing the database


def clone_runs(db: Any, flow: str, run: str, copies: int) -> None:
    """`copies` copies of one real run (its steps, tasks, metadata and artifacts), as new runs."""
    with db.cursor() as cur:
        cur.execute("SELECT max(run_number), (SELECT max(task_id) FROM tasks_v3) FROM runs_v3")
        run_base, task_max = cur.fetchone()
        stride = task_max + 1
        params = {"flow": flow, "run": int(run), "n": copies, "base": run_base, "stride": stride}
        where = "x.flow_id = %(flow)s AND x.run_number = %(run)s"
        cur.execute(f"""INSERT INTO runs_v3 (flow_id, run_number, user_name, ts_epoch, tags, system_tags, run_id,
                            last_heartbeat_ts)
            SELECT x.flow_id, %(base)s + g, x.user_name, x.ts_epoch - g * 1000, x.tags, x.system_tags, NULL,
                   x.last_heartbeat_ts - g
            FROM runs_v3 x, generate_series(1, %(n)s) g WHERE {where}""", params)
        cur.execute(f"""INSERT INTO steps_v3 (flow_id, run_number, step_name, user_name, ts_epoch, tags, system_tags,
                            run_id)
            SELECT x.flow_id, %(base)s + g, x.step_name, x.user_name, x.ts_epoch - g * 1000, x.tags, x.system_tags, NULL
            FROM steps_v3 x, generate_series(1, %(n)s) g WHERE {where}""", params)
        cur.execute(f"""INSERT INTO tasks_v3 (flow_id, run_number, step_name, task_id, user_name, ts_epoch, tags,
                            system_tags, run_id, task_name, last_heartbeat_ts)
            SELECT x.flow_id, %(base)s + g, x.step_name, x.task_id + g * %(stride)s, x.user_name, x.ts_epoch - g * 1000,
                   x.tags, x.system_tags, NULL, x.task_name, x.last_heartbeat_ts - g
            FROM tasks_v3 x, generate_series(1, %(n)s) g WHERE {where}""", params)
        cur.execute(f"""INSERT INTO metadata_v3 (flow_id, run_number, step_name, task_id, field_name, value, type,
                            user_name, ts_epoch, tags, system_tags, run_id, task_name)
            SELECT x.flow_id, %(base)s + g, x.step_name, x.task_id + g * %(stride)s, x.field_name, x.value, x.type,
                   x.user_name, x.ts_epoch - g * 1000, x.tags, x.system_tags, NULL, x.task_name
            FROM metadata_v3 x, generate_series(1, %(n)s) g WHERE {where}""", params)
        cur.execute(f"""INSERT INTO artifact_v3 (flow_id, run_number, step_name, task_id, name, location, ds_type, sha,
                            type, content_type, user_name, attempt_id, ts_epoch, tags, system_tags, run_id, task_name)
            SELECT x.flow_id, %(base)s + g, x.step_name, x.task_id + g * %(stride)s, x.name, x.location, x.ds_type,
                   x.sha, x.type, x.content_type, x.user_name, x.attempt_id, x.ts_epoch - g * 1000, x.tags,
                   x.system_tags, NULL, x.task_name
            FROM artifact_v3 x, generate_series(1, %(n)s) g WHERE {where}""", params)
        cur.execute("SELECT setval(pg_get_serial_sequence('runs_v3', 'run_number'), (SELECT max(run_number) FROM runs_v3))")
        cur.execute("SELECT setval(pg_get_serial_sequence('tasks_v3', 'task_id'), (SELECT max(task_id) FROM tasks_v3))")
    db.commit()


def widen_foreach(db: Any, flow: str, run: str, step: str, width: int) -> None:
    """Copies of one real foreach task (metadata and artifacts too) until the step has `width` tasks."""
    with db.cursor() as cur:
        cur.execute("SELECT min(task_id), count(*) FROM tasks_v3 WHERE flow_id = %s AND run_number = %s "
                    "AND step_name = %s", (flow, int(run), step))
        source, have = cur.fetchone()
        cur.execute("SELECT max(task_id) FROM tasks_v3")
        (base,) = cur.fetchone()
        params = {"flow": flow, "run": int(run), "step": step, "task": source, "n": width - have, "base": base}
        where = "x.flow_id = %(flow)s AND x.run_number = %(run)s AND x.step_name = %(step)s AND x.task_id = %(task)s"
        cur.execute(f"""INSERT INTO tasks_v3 (flow_id, run_number, step_name, task_id, user_name, ts_epoch, tags,
                            system_tags, run_id, task_name, last_heartbeat_ts)
            SELECT x.flow_id, x.run_number, x.step_name, %(base)s + g, x.user_name, x.ts_epoch + g, x.tags,
                   x.system_tags, x.run_id, (%(base)s + g)::text, x.last_heartbeat_ts
            FROM tasks_v3 x, generate_series(1, %(n)s) g WHERE {where}""", params)
        cur.execute(f"""INSERT INTO metadata_v3 (flow_id, run_number, step_name, task_id, field_name, value, type,
                            user_name, ts_epoch, tags, system_tags, run_id, task_name)
            SELECT x.flow_id, x.run_number, x.step_name, %(base)s + g, x.field_name, x.value, x.type, x.user_name,
                   x.ts_epoch + g, x.tags, x.system_tags, x.run_id, (%(base)s + g)::text
            FROM metadata_v3 x, generate_series(1, %(n)s) g WHERE {where}""", params)
        cur.execute(f"""INSERT INTO artifact_v3 (flow_id, run_number, step_name, task_id, name, location, ds_type, sha,
                            type, content_type, user_name, attempt_id, ts_epoch, tags, system_tags, run_id, task_name)
            SELECT x.flow_id, x.run_number, x.step_name, %(base)s + g, x.name, x.location, x.ds_type, x.sha, x.type,
                   x.content_type, x.user_name, x.attempt_id, x.ts_epoch + g, x.tags, x.system_tags, x.run_id,
                   (%(base)s + g)::text
            FROM artifact_v3 x, generate_series(1, %(n)s) g WHERE {where}""", params)
        cur.execute("SELECT setval(pg_get_serial_sequence('tasks_v3', 'task_id'), (SELECT max(task_id) FROM tasks_v3))")
    db.commit()


def copy_database(dsn: str, datastore: Path, copied_datastore: Path) -> dict[str, str]:
    """A copy of the database for upstream, its ds-root pointing into a copy of the datastore."""
    parts = urlsplit(dsn)
    name = f"bench_upstream_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PGPASSWORD": parts.password or ""}
    common = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port), "-U", parts.username or "postgres"]
    subprocess.run([str(pg_binary("createdb")), *common, name], env=env, check=True, capture_output=True)
    dump = subprocess.run([str(pg_binary("pg_dump")), *common, "--no-owner", parts.path[1:]], env=env, check=True,
                          capture_output=True)
    subprocess.run([str(pg_binary("psql")), *common, "-q", "-v", "ON_ERROR_STOP=1", "-d", name], input=dump.stdout,
                   env=env, check=True, capture_output=True)
    shutil.copytree(datastore, copied_datastore, symlinks=True)
    copy_dsn = parts._replace(path="/" + name).geturl()
    with psycopg2.connect(copy_dsn) as db, db.cursor() as cur:
        cur.execute("UPDATE metadata_v3 SET value = replace(value, %s, %s) WHERE field_name = 'ds-root'",
                    (str(datastore), str(copied_datastore)))
    return {"host": parts.hostname or "127.0.0.1", "port": str(parts.port), "user": parts.username or "postgres",
            "password": parts.password or "", "dbname": name}


# ---------------------------------------------------------------- the pages


class Client:
    """One backend as the browser sees it: a base URL, the key, six connections."""

    def __init__(self, name: str, base: str, headers: dict[str, str]) -> None:
        self.name = name
        self.base = base
        self.headers = headers
        self.pool = ThreadPoolExecutor(BROWSER_CONNECTIONS)
        self.sessions: dict[int, requests.Session] = {}
        self.first_log_rows = 0  # what the last first log page held
        self.downloaded_lines = 0  # what the last log download held

    def get(self, path: str) -> requests.Response:
        import threading

        session = self.sessions.setdefault(threading.get_ident(), requests.Session())
        answer = session.get(path if path.startswith("http") else self.base + path, headers=self.headers, timeout=600)
        if answer.status_code != 200:
            raise RuntimeError(f"{self.name}: {path} answered {answer.status_code}: {answer.text[:300]}")
        return answer

    def get_all(self, path: str) -> list[Any]:
        """Every page of a list, following links.next as the UI's fetchAllData does."""
        rows: list[Any] = []
        url: str | None = path
        while url:
            doc = self.get(url).json()
            rows.extend(doc["data"])
            following = (doc.get("links") or {}).get("next")
            url = urljoin(self.base + "/", following) if following else None
            if url and not url.startswith(self.base):
                url = self.base + urlsplit(url).path.removeprefix(urlsplit(self.base).path) + "?" + urlsplit(url).query
        return rows

    def together(self, *calls: Callable[[], Any]) -> list[Any]:
        return [future.result() for future in [self.pool.submit(call) for call in calls]]


def home_page(client: Client) -> None:
    runs = client.get(f"/runs?_order=-ts_epoch&_limit={HOME_ROWS}&_group_limit={HOME_ROWS + 1}&_page=1").json()["data"]
    assert len(runs) == HOME_ROWS, len(runs)
    client.together(*[
        (lambda run=run: client.get_all(f"/flows/{run['flow_id']}/runs/{run['run_number']}/metadata?step_name=start"))
        for run in runs
    ])


def home_floor(client: Client) -> None:
    """The home page's requests in the same pattern (one, then two in a row per row, six at a
    time) sent to `/version`, which reads nothing: the fixed cost of that many requests (this
    client, HTTP, the web process), below which the home page cannot go."""
    client.get("/version")
    client.together(*[(lambda: (client.get("/version"), client.get("/version"))) for _ in range(HOME_ROWS)])


def run_page(client: Client, flow: str, run: str, width: int) -> None:
    base = f"/flows/{flow}/runs/{run}"
    _, _, tasks, *_ = client.together(
        lambda: client.get(base),
        lambda: client.get(base + "/steps?_order=+ts_epoch&_limit=1000"),
        lambda: client.get_all(base + "/tasks?_order=+ts_epoch&_limit=1000&postprocess=false"),
        lambda: client.get(base + "/dag"),
        lambda: client.get_all(base + "/metadata?step_name=start"),
        lambda: client.get(base + "/parameters"),
        lambda: client.get(base + "/artifacts?ds_type=local&_limit=1"),
    )
    assert len(tasks) >= width, len(tasks)


def task_page(client: Client, flow: str, run: str, task: str, lines: int, between: Callable[[], None]) -> float:
    """Seconds for the first log page plus the download; `between` runs untimed in the middle."""
    base = f"/flows/{flow}/runs/{run}/steps/start/tasks/{task}/logs/out"
    start = time.perf_counter()
    first = client.get(base + "?attempt_id=0&_limit=1000&_page=1&_order=-row").json()["data"]
    spent = time.perf_counter() - start
    client.first_log_rows = len(first)
    between()
    start = time.perf_counter()
    download = client.get(base + "/download?attempt_id=0")
    spent += time.perf_counter() - start
    client.downloaded_lines = download.text.count("\n")
    return spent


def restore_logs(datastore: Path, copied_datastore: Path, flow: str) -> None:
    """Put the flow's files back into upstream's copy of the datastore: its log route moves a
    task's log files away on the first read (contract, Part B §3.2)."""
    for source in (datastore / ".metaflow" / flow).rglob("*"):
        target = copied_datastore / source.relative_to(datastore)
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def timed(page: Callable[[], Any]) -> float:
    """Seconds the page took (or the seconds it reports itself)."""
    start = time.perf_counter()
    spent = page()
    return spent if isinstance(spent, float) else time.perf_counter() - start


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()

    with ui_stack("mfcolab-bench-ui-") as stack:
        tmp, root, port = stack.tmp, stack.root, stack.port
        backend = None
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "MFCOLAB_"))}
            env.update(METAFLOW_HOME=str(tmp / "metaflow-home"), USERNAME="bench")
            mfcolab("connect", "--root", str(root), env=env)
            env["METAFLOW_PROFILE"] = "mfcolab"
            (tmp / "long_log_flow.py").write_text(textwrap.dedent(LONG_LOG_FLOW))
            say("running the real flows")
            linear = run_flow(env, tmp, FLOWS / "linear_flow.py")
            foreach = run_flow(env, tmp, FLOWS / "foreach_flow.py", "--width", "4")
            long_log = run_flow(env, tmp, tmp / "long_log_flow.py", "--lines", str(args.lines))
            dsn = dsn_for(stack.pg_port, credentials.db_password(stack.settings))  # the superuser: it grows and copies the database
            web_pid = stack.web_pid()
            rss_flows = memory(web_pid)
            say(f"growing the database: {args.runs} runs, a foreach of {args.width}")
            with psycopg2.connect(dsn) as db:
                widen_foreach(db, "ForeachFlow", foreach, "square", args.width)
                clone_runs(db, "LinearFlow", linear, args.runs - 3)
                with db.cursor() as cur:
                    cur.execute("SELECT task_id FROM tasks_v3 WHERE flow_id = 'LongLogFlow' AND run_number = %s "
                                "AND step_name = 'start'", (int(long_log),))
                    (log_task,) = cur.fetchone()
            say("starting upstream's UI backend on a copy of the database and the datastore")
            parts = copy_database(dsn, root / "datastore", tmp / "datastore-upstream")
            backend = UpstreamBackend(parts, free_port(), tmp / "upstream.log")
            backend.env.update(METAFLOW_DEFAULT_DATASTORE="local",
                               METAFLOW_DATASTORE_SYSROOT_LOCAL=str(tmp / "datastore-upstream"))
            backend.start(tmp)

            ours = Client("mfcolab", f"http://127.0.0.1:{port}/api", {"x-api-key": stack.key})
            theirs = Client("upstream", backend.url, {})
            def restore() -> None:
                restore_logs(root / "datastore", tmp / "datastore-upstream", "LongLogFlow")

            pages: dict[str, Callable[[Client], Any]] = {
                f"home ({args.runs} runs)": home_page,
                "home's requests to /version": home_floor,
                f"run (foreach of {args.width})": lambda c: run_page(c, "ForeachFlow", foreach, args.width),
                f"task ({args.lines} log lines)": lambda c: task_page(
                    c, "LongLogFlow", long_log, str(log_task), args.lines, restore if c is theirs else lambda: None),
            }
            times: dict[tuple[str, str], list[float]] = {}
            first: dict[tuple[str, str], float] = {}
            rss_before = memory(web_pid)
            for round_number in range(args.rounds + 1):
                for page, open_page in pages.items():
                    for client in (ours, theirs) if round_number % 2 else (theirs, ours):
                        if client is theirs:
                            restore()
                        seconds = timed(lambda open_page=open_page, client=client: open_page(client))
                        if round_number == 0:
                            first[(page, client.name)] = seconds
                        else:
                            times.setdefault((page, client.name), []).append(seconds)
                say(f"round {round_number}/{args.rounds} done" + (" (warm-up)" if round_number == 0 else ""))
            rss_after = memory(web_pid)
        finally:
            if backend is not None:
                backend.stop()

    med = statistics.median
    print(f"{args.rounds} rounds after a warm-up, alternating; requests six at a time; times in ms")
    print(f"{'page':28} {'mfcolab':>9} {'upstream':>9} {'ratio':>6}   first (cold) mfcolab / upstream")
    for page in pages:
        mine, other = med(times[(page, "mfcolab")]) * 1000, med(times[(page, "upstream")]) * 1000
        print(f"{page:28} {mine:9.0f} {other:9.0f} {other / mine:6.1f}x   "
              f"{first[(page, 'mfcolab')] * 1000:.0f} / {first[(page, 'upstream')] * 1000:.0f}")
    for client in (ours, theirs):
        print(f"{client.name}: the first log page held {client.first_log_rows} rows (of {min(1000, args.lines)} asked), "
              f"the download {client.downloaded_lines} of {args.lines} lines")
    print(f"web process (front door, metadata service, UI API): RSS {rss_flows[0]} MB after the real flows, "
          f"{rss_before[0]} MB once the database was grown, before the pages (live updates hear of every row "
          f"inserted), "
          f"{rss_after[0]} MB after; peak {rss_after[1]} MB")


if __name__ == "__main__":
    main()
