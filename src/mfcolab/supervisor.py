"""`mfcolab serve`: start the stack in dependency order, keep it up, stop it in reverse.

States per component (see states.py): STARTING becomes RUNNING only once the component's
health check passes. A component that dies is restarted after a backoff; one that dies again
before it became healthy, too many times in a row, is FATAL. SIGTERM (what `down` sends) stops
everything in reverse order: the tunnel first, Postgres last, then the mirror ships what is left.
The supervisor's view of the world is written to <local>/run/status.json for `status` and `up`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from . import credentials, schema
from .component import Component
from .errors import ComponentError, MfcolabError, StackStateError
from .postgres import Postgres
from .settings import Settings
from .states import State

log = logging.getLogger(__name__)

BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0  # seconds of RUNNING after which the failure count resets
TICK = 0.5
RECOVERY_TIMEOUT = 3600.0  # replaying a long stretch of shipped WAL; progress is shown meanwhile


@dataclass
class Slot:
    """A component and what the supervisor knows about it."""

    component: Component
    state: State = State.STOPPED
    since: float = field(default_factory=time.time)
    failures: int = 0
    restarts: int = 0
    retry_at: float = 0.0
    reason: str = ""
    changed: bool = False  # since the status file was last written

    def move(self, state: State, reason: str = "") -> None:
        if state != self.state:
            log.info("%s: %s -> %s%s", self.component.name, self.state.value, state.value, f" ({reason})" if reason else "")
        self.state, self.since, self.reason, self.changed = state, time.time(), reason, True

    def report(self) -> dict[str, Any]:
        c = self.component
        return {
            "name": c.name, "state": self.state.value, "pid": c.pid, "port": c.port, "since": self.since,
            "restarts": self.restarts, "reason": self.reason, "log": str(c.log_path) if c.log_path else None,
            **c.info(),
        }


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        from . import mirror
        from .web import WebComponent

        self.settings = settings
        self.key = credentials.access_key(settings)
        self.postgres = Postgres(settings, credentials.db_password(settings), mirror.archive_options(settings))
        self.mirror = mirror.Mirror(settings, self.postgres.dsn)
        components: list[Component] = [self.postgres]
        components += self._official_components()
        components.append(WebComponent(settings))
        if settings.tunnel:
            components.append(self._tunnel())
        self.slots = [Slot(c) for c in components]
        self.phase = "starting"
        self.ready = False
        self.error = ""
        self.public_url = ""
        self.started_at = time.time()
        self._stop = threading.Event()
        self._snapshot_requested = threading.Event()
        self._last_snapshot: dict[str, Any] = {}

    def _official_components(self) -> list[Component]:
        if self.settings.engine == "native" and self.settings.ui == "none":
            return []
        from . import official
        from .web import database_dsn

        return official.components(self.settings, database_dsn(self.settings))  # as the service's role

    def _tunnel(self) -> Component:
        from .tunnel import TunnelComponent

        return TunnelComponent(self.settings, on_url=self._publish_url)

    # -- the run --------------------------------------------------------------------------

    def run(self) -> int:
        lock = self._take_lock()
        self._install_signal_handlers()
        self.settings.supervisor_pid_file.write_text(f"{os.getpid()}\n")
        try:
            self._start_all()
            if not self._stop.is_set():
                self.ready, self.phase = True, "running"
                self.write_status()
                log.info("stack is up: %s", self.settings.local_url)
                self._watch()
            return 0
        except MfcolabError as exc:
            self.error = str(exc)
            log.error("%s", exc)
            return 1
        finally:
            self._stop_all()
            self.phase = "stopped"
            self.write_status()
            self.settings.supervisor_pid_file.unlink(missing_ok=True)
            lock.close()

    def stop(self) -> None:
        self._stop.set()

    def _take_lock(self) -> Any:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.settings.run_dir / "supervisor.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StackStateError(f"a stack is already running for {self.settings.local}", "mfcolab status") from None
        return handle

    def _install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self._stop.set())
        signal.signal(signal.SIGUSR1, lambda *_: self._snapshot_requested.set())

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        log.info("%s", phase)
        self.write_status()

    def _start_all(self) -> None:
        from .restore import restore_if_needed

        self._set_phase("checking the root folder for snapshots")
        restored = restore_if_needed(self.settings, progress=lambda line: self._set_phase(line))
        if restored:
            log.info("%s", restored)
        for slot in self.slots:
            if self._stop.is_set():
                return
            self._set_phase(f"starting {slot.component.name}")
            self._start_and_wait(slot)
            if slot.component is self.postgres:
                self._wait_for_recovery()
                self._set_phase("applying the schema")
                schema.apply(self.postgres.dsn)
                schema.give_tables_to_service(self.postgres.dsn, credentials.service_password(self.settings))
                self._skip_lost_ids()
                self.mirror.start()
        if not self.settings.tunnel:
            self._publish_url(self.settings.local_url)

    def _skip_lost_ids(self) -> None:
        from .restore import reserve_lost_ids

        moved = reserve_lost_ids(self.postgres.dsn, self.settings.datastore_dir)
        if moved:
            log.info("ids used by runs lost in the last crash are skipped: sequences now at %s", moved)

    def _wait_for_recovery(self) -> None:
        """A restored server accepts read-only connections while it replays the shipped WAL;
        the schema and the service need it promoted."""
        shown = False
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while not self._stop.is_set():
            try:
                conn = psycopg2.connect(self.postgres.dsn, connect_timeout=5)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_is_in_recovery()")
                        if not cur.fetchone()[0]:
                            return
                finally:
                    conn.close()
            except psycopg2.Error as exc:
                if not self.postgres.alive():
                    raise ComponentError(f"postgres exited during recovery{_log_tail(self.postgres)}", "mfcolab logs postgres") from exc
            if not shown:
                self._set_phase("Postgres is replaying the restored WAL")
                shown = True
            if time.monotonic() > deadline:
                raise ComponentError(f"postgres still in recovery after {RECOVERY_TIMEOUT:.0f} s", "mfcolab logs postgres")
            self._stop.wait(0.1)

    def _start_and_wait(self, slot: Slot) -> None:
        """Start one component and wait until it is healthy; raise if it cannot get there."""
        component = slot.component
        slot.move(State.STARTING)
        component.start()
        deadline = time.monotonic() + component.start_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if component.healthy():
                slot.move(State.RUNNING)
                return
            if not component.alive():
                break
            time.sleep(0.05)
        if self._stop.is_set():
            return
        why = "exited during start" if not component.alive() else f"not healthy after {component.start_timeout:.0f} s"
        if not component.essential:
            # BACKOFF: the stack comes up without it; the watch loop keeps retrying.
            reason = component.info().get("error") or why
            component.stop(component.stop_timeout)
            slot.failures, slot.retry_at = 1, time.time() + 1.0
            slot.move(State.BACKOFF, reason)
            return
        slot.move(State.FATAL, why)
        raise ComponentError(f"{component.name} {why}{_log_tail(component)}", f"mfcolab logs {component.name}")

    def _watch(self) -> None:
        next_status = 0.0
        while not self._stop.is_set():
            for slot in self.slots:
                self._check(slot)
            if self._snapshot_requested.is_set():
                self._snapshot_requested.clear()
                self._take_snapshot()
            if time.monotonic() >= next_status or any(slot.changed for slot in self.slots):
                self.write_status()
                next_status = time.monotonic() + 1.0
            self._stop.wait(TICK)

    def _take_snapshot(self) -> None:
        try:
            report = self.mirror.snapshot()
            self._last_snapshot = {"at": time.time(), **_as_dict(report)}
        except MfcolabError as exc:
            self._last_snapshot = {"at": time.time(), "error": str(exc)}
        self.write_status()

    def _check(self, slot: Slot) -> None:
        """One supervision step for one component: the state machine's transitions."""
        component, now = slot.component, time.time()
        if slot.state in (State.RUNNING, State.STARTING) and not component.alive():
            # RUNNING/STARTING -> BACKOFF: it died
            slot.failures = 1 if slot.state == State.RUNNING and now - slot.since > STABLE_AFTER else slot.failures + 1
            limit = component.restart_limit
            if limit is not None and slot.failures > limit:
                slot.move(State.FATAL, f"died {slot.failures} times in a row; see its log")  # BACKOFF -> FATAL
                return
            delay = min(2.0 ** (slot.failures - 1), BACKOFF_MAX)
            slot.retry_at = now + delay
            why = component.info().get("error") or f"exited with code {_exit_code(component)}"
            slot.move(State.BACKOFF, f"{why}; restarting in {delay:.0f} s")
        elif slot.state == State.BACKOFF and now >= slot.retry_at:
            # BACKOFF -> STARTING
            try:
                component.start()
                slot.restarts += 1
                slot.move(State.STARTING)
            except MfcolabError as exc:
                slot.failures += 1
                slot.retry_at = now + min(2.0 ** slot.failures, BACKOFF_MAX)
                slot.reason = str(exc)
        elif slot.state == State.STARTING:
            if component.healthy():
                slot.move(State.RUNNING)  # STARTING -> RUNNING
            elif now - slot.since > component.start_timeout:
                component.stop(component.stop_timeout)  # STARTING -> BACKOFF via the dead-process path
        elif slot.state == State.RUNNING and now - slot.since > STABLE_AFTER:
            slot.failures = 0

    def _stop_all(self) -> None:
        self._set_phase("stopping")
        for slot in reversed(self.slots):
            component = slot.component
            if component is self.postgres:
                self.mirror.stop()
                self._ensure_base()
            if component.alive() or component.pid is not None:
                slot.move(State.STOPPING)
                log.info("waiting for %s to stop", component.name)
                component.stop(component.stop_timeout)
            slot.move(State.STOPPED)
        if self.postgres.is_initialized():
            self._set_phase("taking the final snapshot")
            try:
                report = self.mirror.final_snapshot()
                log.info("final snapshot: %s", _as_dict(report))
            except MfcolabError as exc:
                log.error("final snapshot failed: %s", exc)

    def _ensure_base(self) -> None:
        if not self.postgres.healthy():
            return
        self._set_phase("making sure a complete snapshot exists")
        try:
            report = self.mirror.ensure_base()
            if report is not None:
                log.info("base before stopping: %s", report)
        except (MfcolabError, OSError, psycopg2.Error) as exc:
            log.error("could not take a base before stopping: %s", exc)

    # -- publishing -----------------------------------------------------------------------

    def _publish_url(self, url: str) -> None:
        self.public_url = url
        credentials.publish_connection(self.settings, url, self.key)
        log.info("published %s to %s", url, self.settings.connection_file)
        self.write_status()

    def write_status(self) -> None:
        for slot in self.slots:
            slot.changed = False
        status = {
            "supervisor_pid": os.getpid(),
            "started_at": self.started_at,
            "phase": self.phase,
            "ready": self.ready,
            "error": self.error,
            "url": self.settings.local_url,
            "public_url": self.public_url,
            "components": [slot.report() for slot in self.slots],
            "mirror": _safe_info(self.mirror),
            "last_snapshot": self._last_snapshot,
        }
        credentials.write_private(self.settings.status_file, json.dumps(status, indent=2, default=str))


def _log_tail(component: Component) -> str:
    from .process import tail_file

    if component.log_path is None:
        return ""
    tail = tail_file(component.log_path, 12).strip()
    return f"; last lines of {component.log_path}:\n{tail}" if tail else ""


def _exit_code(component: Component) -> Any:
    process = getattr(component, "process", None)
    return process.exit_code() if process is not None else "?"


def _as_dict(report: Any) -> dict[str, Any]:
    if hasattr(report, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(report)
    return dict(report) if isinstance(report, dict) else {"report": str(report)}


def _safe_info(mirror: Any) -> dict[str, Any]:
    try:
        return dict(mirror.info())
    except Exception as exc:  # status must always be writable
        return {"state": "unknown", "error": str(exc)}
