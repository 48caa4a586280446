"""Crash trials for the mirror: real Postgres, a real mirror process, real writes, real SIGKILL.

`ComponentStack` runs Postgres (a child of this process) and the mirror (a separate Python
process, so it can be SIGKILLed mid-copy). A trial: restore what the root folder holds, start
the stack, keep Metaflow-shaped writes going, SIGKILL everything at a random instant (or the
moment a temporary file shows up in the root folder: mid-ship), delete the local folder, restore
and check. `scripts/crash_restore.py --components` runs many trials; the test suite runs a few.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2

from helpers import wait_until
from mfcolab.postgres import DB_USER, Postgres, run_pg_tool
from mfcolab.replica import layout
from mfcolab.replica.manifest import load_manifest
from mfcolab.replica.mirror import archive_options
from mfcolab.replica.restore import restore_if_needed
from mfcolab.settings import Settings
from mfcolab.supervisor import boot
from mirror_helpers import PASSWORD, temp_files_in

MIRROR_CHILD = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
from mfcolab.settings import Settings
from mfcolab.replica import mirror as mirror_module
from mfcolab.replica.mirror import Mirror
if sys.argv[2:] == ["routine-bases"]:  # a new base uploads beside the cycles all the time
    mirror_module.BASE_MIN_WAL_BYTES, mirror_module.BASE_WAL_RATIO = 0, 0.0
mirror = Mirror(Settings.resolve(), sys.argv[1])
mirror.start()
while True:
    time.sleep(3600)
"""


@dataclasses.dataclass
class Ack:
    run_number: int
    lsn: int  # WAL position after the last write of the unit committed
    at: float  # wall clock when the client saw the commit


class Writer(threading.Thread):
    """Metaflow's per-task write sequence, one run at a time, each statement its own commit."""

    def __init__(self, dsn: str, flow: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.flow = flow
        self.acks: list[Ack] = []
        self.stopping = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=5)
            conn.autocommit = True
            cur = conn.cursor()
            now = int(time.time() * 1000)
            cur.execute("INSERT INTO flows_v3 (flow_id, user_name, ts_epoch, tags, system_tags) VALUES (%s, 'crash', %s, '[]', '[]')"
                        " ON CONFLICT DO NOTHING", (self.flow, now))
            while not self.stopping.is_set():
                self.acks.append(self.write_run(cur))
        except psycopg2.Error as exc:
            self.error = str(exc).strip()

    def write_run(self, cur: Any) -> Ack:
        now = int(time.time() * 1000)
        cur.execute("INSERT INTO runs_v3 (flow_id, user_name, ts_epoch, tags, system_tags) VALUES (%s, 'crash', %s, '[]', '[\"user:crash\"]')"
                    " RETURNING run_number", (self.flow, now))
        run = int(cur.fetchone()[0])
        cur.execute("INSERT INTO steps_v3 (flow_id, run_number, step_name, user_name, ts_epoch, tags, system_tags)"
                    " VALUES (%s, %s, 'start', 'crash', %s, '[]', '[]')", (self.flow, run, now))
        cur.execute("INSERT INTO tasks_v3 (flow_id, run_number, step_name, user_name, ts_epoch, tags, system_tags)"
                    " VALUES (%s, %s, 'start', 'crash', %s, '[]', '[]') RETURNING task_id", (self.flow, run, now))
        task = int(cur.fetchone()[0])
        cur.execute("INSERT INTO metadata_v3 (flow_id, run_number, step_name, task_id, field_name, value, type, user_name, ts_epoch, tags, system_tags)"
                    " VALUES (%s, %s, 'start', %s, 'attempt', '0', 'attempt', 'crash', %s, '[]', '[]')", (self.flow, run, task, now))
        cur.execute("INSERT INTO artifact_v3 (flow_id, run_number, step_name, task_id, name, location, ds_type, sha, type, content_type,"
                    " user_name, attempt_id, ts_epoch, tags, system_tags) VALUES (%s, %s, 'start', %s, 'name', %s, 'local', %s,"
                    " 'metaflow.artifact', 'gzip+pickle-v2', 'crash', 0, %s, '[]', '[]')",
                    (self.flow, run, task, f"/ds/{self.flow}/{run}", f"{run:040x}", now))
        cur.execute("SELECT pg_current_wal_lsn()")
        lsn = layout.parse_lsn(str(cur.fetchone()[0]))
        return Ack(run, lsn, time.time())


class ComponentStack:
    """Postgres plus a mirror process, driven directly (the stand-in for `mfcolab up`).
    `routine_bases`: the mirror uploads a new base beside its cycles whenever none is uploading."""

    def __init__(self, settings: Settings, routine_bases: bool = False) -> None:
        self.settings = settings
        self.routine_bases = routine_bases
        self.pg: Postgres | None = None
        self.mirror: subprocess.Popen[bytes] | None = None

    def up(self) -> str | None:
        restored = restore_if_needed(self.settings, progress=lambda line: None)
        self.pg = Postgres(self.settings, PASSWORD, archive_options(self.settings))
        self.pg.start()
        wait_until(self.pg.healthy, 120, what="postgres to accept connections")
        boot.prepare_database(self.pg, self.settings, lambda line: None, threading.Event())
        log = open(self.settings.local / "mirror.log", "ab")
        env = {**os.environ, **self.settings.to_env()}
        argv = [sys.executable, "-c", MIRROR_CHILD, self.pg.dsn, *(["routine-bases"] if self.routine_bases else [])]
        self.mirror = subprocess.Popen(argv, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return restored

    @property
    def dsn(self) -> str:
        if self.pg is None:
            raise RuntimeError("the stack is not up")
        return self.pg.dsn

    def kill_all(self) -> None:
        """SIGKILL every process of the stack (Postgres and its children, the mirror and its
        pg_basebackup), each by its own process group."""
        for pid in (self.mirror.pid if self.mirror else None, self.pg.pid if self.pg else None):
            if pid is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.mirror is not None:
            self.mirror.wait(10)
        if self.pg is not None and self.pg.process is not None and self.pg.process.popen is not None:
            self.pg.process.popen.wait(10)

    def check_database(self) -> None:
        """pg_amcheck over every database; raises with its report when it finds anything."""
        run_pg_tool(self.settings, "pg_amcheck", ["-h", str(self.settings.run_dir / "pg"), "-p", str(self.settings.pg_port),
                                                  "-U", DB_USER, "--all", "--install-missing", "--heapallindexed"], timeout=300)

    def stop(self) -> None:
        if self.mirror is not None and self.mirror.poll() is None:
            os.killpg(self.mirror.pid, signal.SIGKILL)
            self.mirror.wait(10)
        if self.pg is not None:
            self.pg.stop(20)


@dataclasses.dataclass
class TrialResult:
    trial: int
    restored: bool
    mid_ship: bool  # killed while a temporary file existed in the root folder
    acked: int
    missing: int
    missing_before_shipped_end: int  # acknowledged, in WAL the manifest says shipped, yet absent: a bug
    loss_window: float  # seconds between the oldest missing acknowledgement and the kill
    error: str = ""


def shipped_end_lsn(settings: Settings) -> int:
    """End of the WAL the root folder's manifest names for the newest generation."""
    manifest = load_manifest(settings)
    newest = manifest.newest() if manifest else None
    if manifest is None or newest is None:
        return 0
    wal_range = manifest.range_for(newest)
    last = wal_range.last if wal_range else newest.start_segment - 1
    return max((last + 1) * newest.segment_size, layout.parse_lsn(newest.end_lsn))


def run_trial(settings: Settings, trial: int, rng: random.Random, mid_ship: bool,
              run_seconds: tuple[float, float] = (2.0, 8.0), routine_bases: bool = False) -> TrialResult:
    """One crash trial on `settings` (its root folder carries over from earlier trials)."""
    stack = ComponentStack(settings, routine_bases)
    stack.up()
    writer = Writer(stack.dsn, f"CrashFlow{trial}")
    writer.start()
    wait_until(lambda: len(writer.acks) > 0, 60, what="the first write")
    killed_mid_ship = _wait_for_kill_moment(settings, rng, mid_ship, run_seconds)
    killed_at = time.time()
    stack.kill_all()
    writer.stopping.set()
    writer.join(30)
    shipped_end = shipped_end_lsn(settings)
    acks = [a for a in writer.acks if a.at <= killed_at]
    kept_logs = mirror_logs_dir(settings)
    kept_logs.mkdir(exist_ok=True)
    shutil.copyfile(settings.local / "mirror.log", kept_logs / f"trial{trial}.log")
    shutil.rmtree(settings.local)  # a new machine
    result = TrialResult(trial, False, killed_mid_ship, len(acks), 0, 0, 0.0)
    stack = ComponentStack(settings)
    try:
        stack.up()
        stack.check_database()
        present = _runs_present(stack.dsn, writer.flow)
        missing = [a for a in acks if a.run_number not in present]
        result.restored = True
        result.missing = len(missing)
        result.missing_before_shipped_end = sum(1 for a in missing if a.lsn <= shipped_end)
        result.loss_window = max((killed_at - a.at for a in missing), default=0.0)
    except Exception as exc:  # noqa: BLE001 - a failed restore is the result being measured
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        stack.stop()
    return result


def mirror_logs_dir(settings: Settings) -> Path:
    """Where each trial's mirror log is kept (the local folder is deleted)."""
    return settings.local.parent / "mirror-logs"


def _wait_for_kill_moment(settings: Settings, rng: random.Random, mid_ship: bool, run_seconds: tuple[float, float]) -> bool:
    """Sleep until the kill: a random instant, or (mid_ship) the moment a temporary file exists
    in the root folder, whichever comes first. Returns True if it was mid-ship."""
    deadline = time.monotonic() + rng.uniform(*run_seconds)
    if not mid_ship:
        time.sleep(max(0.0, deadline - time.monotonic()))
        return False
    time.sleep(rng.uniform(0.5, run_seconds[0]))  # past the first base, most of the time
    deadline += 20  # give a ship the chance to happen
    while time.monotonic() < deadline:
        if temp_files_in(settings.snapshots_dir):
            return True
        time.sleep(0.001)
    return False


def _runs_present(dsn: str, flow: str) -> set[int]:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT r.run_number FROM runs_v3 r JOIN tasks_v3 t USING (flow_id, run_number)"
                        " JOIN artifact_v3 a USING (flow_id, run_number, task_id) WHERE r.flow_id = %s", (flow,))
            return {int(row[0]) for row in cur.fetchall()}
    finally:
        conn.close()


def summary(results: list[TrialResult]) -> dict[str, Any]:
    windows = sorted(r.loss_window for r in results if r.restored)
    return {
        "trials": len(results),
        "failed_restores": sum(1 for r in results if not r.restored),
        "killed_mid_ship": sum(1 for r in results if r.mid_ship),
        "lost_shipped_writes": sum(r.missing_before_shipped_end for r in results),
        "largest_loss_window_s": round(windows[-1], 2) if windows else None,
        "median_loss_window_s": round(windows[len(windows) // 2], 2) if windows else None,
    }


def dump(results: list[TrialResult]) -> str:
    return json.dumps([dataclasses.asdict(r) for r in results], indent=1)


