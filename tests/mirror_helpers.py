"""Helpers for the mirror, transport and restore tests: an archiving Postgres with its schema,
SQL in one call, a WAL switch, a SIGKILLed server, a killed rsync's leftovers, and checks that
the root folder holds no links and no temporary files. The crash trials are tests/crashtrials/.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import psycopg2

from helpers import wait_until
from mfcolab.postgres import Postgres
from mfcolab.replica import layout
from mfcolab.replica.mirror import archive_options
from mfcolab.settings import Settings
from mfcolab.supervisor import boot

PASSWORD = "crash-password"


def links_in(folder: Path) -> list[str]:
    """Symlinks and hard-linked files under `folder` (the root folder must hold none)."""
    found = []
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(parent, name)
            if path.is_symlink() or (path.is_file() and path.stat().st_nlink > 1):
                found.append(str(path))
    return found


def temp_files_in(folder: Path) -> list[str]:
    return [name for _parent, _dirs, files in os.walk(folder) for name in files if layout.is_temp(name)]


def start_archiving_postgres(settings: Settings) -> Postgres:
    """A Postgres that archives into the staging folder, schema applied, out of recovery."""
    pg = Postgres(settings, PASSWORD, archive_options(settings))
    pg.start()
    wait_until(pg.healthy, 120, what="postgres to accept connections")
    boot.prepare_database(pg, settings, lambda line: None, threading.Event())
    return pg


def execute(dsn: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def switch_wal(settings: Settings, dsn: str) -> str:
    """Close the current WAL segment and wait until Postgres has handed it to the staging folder."""
    name = str(execute(dsn, "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    wait_until(lambda: (settings.wal_staging_dir / name).exists(), 60, what=f"segment {name} in staging")
    return name


def kill_postgres(pg: Postgres) -> None:
    assert pg.pid is not None
    os.killpg(pg.pid, signal.SIGKILL)
    assert pg.process is not None and pg.process.popen is not None
    pg.process.popen.wait(10)


def killed_rsync_leftover(work: Path, dest: Path, name: str, size: int = 4_000_000) -> Path:
    """Start a real rsync copying a random file named `name` into `dest` slowly, SIGKILL it in
    the middle of the file, and return the temporary file it left behind."""
    source = work / f"rsync-source-{os.getpid()}"
    source.mkdir(parents=True, exist_ok=True)
    (source / name).write_bytes(os.urandom(size))
    dest.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest))
    process = subprocess.Popen(["rsync", "-r", "--bwlimit=200", f"{source}/", f"{dest}/"], start_new_session=True)
    try:
        wait_until(lambda: any(n.startswith(".") and (dest / n).stat().st_size > 0 for n in set(os.listdir(dest)) - before),
                   60, what="rsync to start writing")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    shutil.rmtree(source)
    left = [dest / n for n in set(os.listdir(dest)) - before]
    assert len(left) == 1 and left[0].name != name, left
    return left[0]
