"""The database's boot and shutdown sequences, in the one order every caller uses.

Boot:

    restore      the local folder is empty and the root folder holds a snapshot: unpack it
    Postgres     started by the caller (the supervisor, a test) and healthy
    recovery     a restored server replays the shipped WAL; wait until it is promoted
    schema       applied (idempotent); every table handed to the service's role
    ids          sequences moved past ids that runs lost in a crash already used in the datastore
    mirror       started: from here on every commit is shipped to the root folder

Shutdown: the mirror stops and makes sure a complete base exists while Postgres still runs;
after Postgres stopped, the final snapshot ships what is left.

`DatabaseBoot` holds the steps for one stack; the functions below it are the steps themselves,
for callers that drive Postgres or the mirror their own way (the crash trials).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg2

from .. import credentials, schema
from ..errors import ComponentError, MfcolabError
from ..postgres import Postgres, in_recovery
from ..replica.mirror import Mirror
from ..replica.restore import reserve_lost_ids, restore_if_needed
from ..settings import Settings
from ..types import Progress
from .process import tail_file

log = logging.getLogger(__name__)

RECOVERY_TIMEOUT = 3600.0  # replaying a long stretch of shipped WAL; progress is shown meanwhile


class DatabaseBoot:
    """The boot and shutdown steps around one stack's Postgres and mirror."""

    def __init__(self, settings: Settings, postgres: Postgres, mirror: Mirror) -> None:
        self.settings = settings
        self.postgres = postgres
        self.mirror = mirror

    def before_postgres(self, progress: Progress) -> str | None:
        """Restore if needed; returns what was restored (None: nothing)."""
        progress("checking the root folder for snapshots")
        restored = restore_if_needed(self.settings, progress=progress)
        if restored:
            log.info("%s", restored)
        return restored

    def after_postgres(self, progress: Progress, stopping: threading.Event) -> None:
        """Postgres is healthy: wait for recovery, apply the schema, reserve ids, start the mirror."""
        prepare_database(self.postgres, self.settings, progress, stopping)
        if not stopping.is_set():
            self.mirror.start()

    def before_postgres_stops(self, progress: Progress) -> None:
        self.mirror.stop()
        if not self.postgres.healthy():
            return
        progress("making sure a complete snapshot exists")
        try:
            report = self.mirror.ensure_base()
            if report is not None:
                log.info("base before stopping: %s", report)
        except (MfcolabError, OSError, psycopg2.Error) as exc:
            log.error("could not take a base before stopping: %s", exc)

    def after_postgres_stopped(self, progress: Progress) -> None:
        if not self.postgres.is_initialized():
            return
        progress("taking the final snapshot")
        try:
            log.info("final snapshot: %s", self.mirror.final_snapshot())
        except MfcolabError as exc:
            log.error("final snapshot failed: %s", exc)


def prepare_database(postgres: Postgres, settings: Settings, progress: Progress, stopping: threading.Event) -> None:
    """The steps between a healthy Postgres and a usable database: recovery, schema, ids."""
    wait_for_recovery(postgres, progress, stopping)
    if stopping.is_set():
        return
    progress("applying the schema")
    schema.apply(postgres.dsn)
    schema.give_tables_to_service(postgres.dsn, credentials.service_password(settings))
    moved = reserve_lost_ids(postgres.dsn, settings.datastore_dir)
    if moved:
        log.info("ids used by runs lost in the last crash are skipped: sequences now at %s", moved)


def server_in_recovery(dsn: str) -> bool:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            return in_recovery(cur)
    finally:
        conn.close()


def wait_for_recovery(postgres: Postgres, progress: Progress, stopping: threading.Event,
                      timeout: float = RECOVERY_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
    """A restored server accepts read-only connections while it replays the shipped WAL;
    the schema and the service need it promoted."""
    shown = False
    deadline = clock() + timeout
    while not stopping.is_set():
        try:
            if not server_in_recovery(postgres.dsn):
                return
        except psycopg2.Error as exc:
            if not postgres.alive():
                raise ComponentError(f"postgres exited during recovery{log_tail(postgres.log_path)}",
                                     "mfcolab logs postgres") from exc
        if not shown:
            progress("Postgres is replaying the restored WAL")
            shown = True
        if clock() > deadline:
            raise ComponentError(f"postgres still in recovery after {timeout:.0f} s", "mfcolab logs postgres")
        stopping.wait(0.1)


def log_tail(path: Path | None, lines: int = 12) -> str:
    """The last lines of a log, to append to an error message ("" when there is no log)."""
    if path is None:
        return ""
    tail = tail_file(path, lines).strip()
    return f"; last lines of {path}:\n{tail}" if tail else ""
