"""`mfcolab serve`: start the stack in dependency order, keep it up, stop it in reverse.

States per component (see states.py, which also lists the allowed moves): STARTING becomes
RUNNING only once the component's health check passes. A component that dies, or whose start
raises, waits in BACKOFF (capped exponential, backoff.py) and is started again; after
`restart_limit` failures in a row it is FATAL. Staying RUNNING for STABLE_AFTER seconds forgets
the failures. An essential component that is FATAL, during the start or later, shuts the stack
down; a FATAL optional one (the tunnel) leaves the stack running without it. `Slot.step()` is the whole state machine, one tick at a time, on an injectable
clock. SIGTERM (what `down` sends) stops everything in reverse order: the tunnel first,
Postgres last. The database's own boot and shutdown steps (restore, recovery, schema, mirror,
final snapshot) are boot.py's. The supervisor's view of the world is written to
<local>/run/status.json (status.py) for `status` and `up`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from .. import credentials
from ..errors import ComponentError, MfcolabError, StackStateError
from ..logfiles import MAX_BYTES, make_private, rotate_if_large
from ..replica.mirror import Mirror
from ..settings import Settings
from ..types import Clock
from .assembly import build_components, postgres_of
from .backoff import Backoff
from .boot import DatabaseBoot, log_tail
from .component import Component
from .states import State, check_move
from .status import ComponentStatus, StackStatus

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0  # seconds of RUNNING after which the failure count resets
TICK = 0.5
LOG_CHECK_INTERVAL = 10.0  # seconds between looks at the log files' sizes


@dataclass
class Slot:
    """A component and what the supervisor knows about it; `step()` moves it along."""

    component: Component
    clock: Clock = time.time
    state: State = State.STOPPED
    since: float = 0.0
    restarts: int = 0
    reason: str = ""
    changed: bool = False  # since the status file was last written
    backoff: Backoff = field(default_factory=lambda: Backoff(BACKOFF_FIRST, BACKOFF_MAX))

    def __post_init__(self) -> None:
        self.since = self.clock()

    def move(self, state: State, reason: str = "") -> None:
        """Enter `state`; raises TransitionError for a move states.ALLOWED_MOVES does not list."""
        check_move(self.component.name, self.state, state)
        log.info("%s: %s -> %s%s", self.component.name, self.state.value, state.value, f" ({reason})" if reason else "")
        self.state, self.since, self.reason, self.changed = state, self.clock(), reason, True

    def step(self) -> None:
        """One supervision tick: the state machine's transitions for this component."""
        component, now = self.component, self.clock()
        if self.state in (State.RUNNING, State.STARTING) and not component.alive():
            # RUNNING/STARTING -> BACKOFF (or FATAL): it died
            if self.state == State.RUNNING and now - self.since > STABLE_AFTER:
                self.backoff.reset()
            self.failed(self._why_it_died(now))
        elif self.state == State.BACKOFF and self.backoff.due(now):
            # BACKOFF -> STARTING, or back to BACKOFF (or FATAL) when start() raises
            try:
                component.start()
            except MfcolabError as exc:
                self.failed(str(exc))
                return
            self.restarts += 1
            self.move(State.STARTING)
        elif self.state == State.STARTING:
            if component.healthy():
                self.move(State.RUNNING)  # STARTING -> RUNNING
            elif now - self.since > component.start_timeout:
                component.stop(component.stop_timeout)  # STARTING -> BACKOFF on the next tick: it died
        elif self.state == State.RUNNING and now - self.since > STABLE_AFTER:
            self.backoff.reset()

    def failed(self, why: str) -> None:
        """A start failed or the component died: BACKOFF, or FATAL past its restart limit."""
        delay = self.backoff.failed(self.clock())
        limit = self.component.restart_limit
        if limit is not None and self.backoff.failures > limit:
            self.move(State.FATAL, f"failed {self.backoff.failures} times in a row, last: {why}; see its log")
            return
        reason = f"{why}; restarting in {delay:.0f} s"
        if self.state == State.BACKOFF:  # still waiting: only the reason and the schedule change
            self.reason, self.changed = reason, True
        else:
            self.move(State.BACKOFF, reason)

    def _why_it_died(self, now: float) -> str:
        error = self.component.info().get("error")
        if error:
            return str(error)
        if self.state == State.STARTING and now - self.since > self.component.start_timeout:
            return f"not healthy after {self.component.start_timeout:.0f} s"
        return f"exited with code {_exit_code(self.component)}"

    def report(self) -> ComponentStatus:
        c = self.component
        return ComponentStatus(name=c.name, state=self.state.value, pid=c.pid, port=c.port, since=self.since,
                               restarts=self.restarts, reason=self.reason,
                               log=str(c.log_path) if c.log_path else None, details=c.info())


class Supervisor:
    def __init__(self, settings: Settings, components: list[Component] | None = None,
                 boot: DatabaseBoot | None = None, clock: Clock = time.time) -> None:
        """`components` and `boot` default to the stack the settings describe (assembly.py)."""
        self.settings = settings
        self.clock = clock
        credentials.access_key(settings)  # created on the first start; read again when published
        if components is None:
            components = build_components(settings, on_url=self._publish_url)
            postgres = postgres_of(components)
            boot = DatabaseBoot(settings, postgres, Mirror(settings, postgres.dsn))
        self.boot = boot
        self.slots = [Slot(c, clock) for c in components]
        self.status = StackStatus(supervisor_pid=os.getpid(), started_at=clock(), url=settings.local_url)
        self._stop = threading.Event()
        self._snapshot_requested = threading.Event()

    # -- the run --------------------------------------------------------------------------

    def run(self) -> int:
        lock = self._take_lock()
        self._install_signal_handlers()
        credentials.write_private(self.settings.supervisor_pid_file, f"{os.getpid()}\n")
        try:
            self._start_all()
            if not self._stop.is_set():
                self.status.ready, self.status.phase = True, "running"
                self.write_status()
                log.info("stack is up: %s", self.settings.local_url)
                self._watch()
            return 0
        except MfcolabError as exc:
            self.status.error = str(exc)
            log.error("%s", exc)
            return 1
        except Exception as exc:  # `up` shows this line; the traceback goes to the error log
            self.status.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._stop_all()
            self.status.phase = "stopped"
            self.write_status()
            self.settings.supervisor_pid_file.unlink(missing_ok=True)
            lock.close()

    def stop(self) -> None:
        self._stop.set()

    def _take_lock(self) -> IO[str]:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        make_private(self.settings.run_dir / "supervisor.lock")
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
        self.status.phase = phase
        log.info("%s", phase)
        self.write_status()

    def _start_all(self) -> None:
        if self.boot is not None:
            self.boot.before_postgres(self._set_phase)
        for slot in self.slots:
            if self._stop.is_set():
                return
            self._set_phase(f"starting {slot.component.name}")
            self.start_and_wait(slot)
            if self.boot is not None and slot.component is self.boot.postgres:
                self.boot.after_postgres(self._set_phase, self._stop)
        if not self.settings.tunnel:
            self._publish_url(self.settings.local_url)

    def start_and_wait(self, slot: Slot) -> None:
        """Start one component and wait until it is healthy; raise if an essential one cannot get there.
        A non-essential one that fails is left in BACKOFF: the stack comes up without it."""
        component = slot.component
        slot.move(State.STARTING)
        try:
            component.start()
        except MfcolabError as exc:
            if component.essential:
                slot.move(State.FATAL, str(exc))
                raise
            slot.failed(str(exc))
            return
        deadline = self.clock() + component.start_timeout
        while self.clock() < deadline and not self._stop.is_set():
            if component.healthy():
                slot.move(State.RUNNING)
                return
            if not component.alive():
                break
            self._stop.wait(0.05)
        if self._stop.is_set():
            return
        why = "exited during start" if not component.alive() else f"not healthy after {component.start_timeout:.0f} s"
        if not component.essential:
            reason = component.info().get("error") or why
            component.stop(component.stop_timeout)
            slot.failed(str(reason))
            return
        slot.move(State.FATAL, why)
        raise ComponentError(f"{component.name} {why}{log_tail(component.log_path)}", f"mfcolab logs {component.name}")

    def _watch(self) -> None:
        """Step every slot each tick until asked to stop; raises ComponentError (which stops the
        stack) when an essential component went FATAL: the stack cannot serve without it."""
        next_status = next_rotation = 0.0
        while not self._stop.is_set():
            for slot in self.slots:
                slot.step()
            self._stop_if_essential_fatal()
            if time.monotonic() >= next_rotation:
                self._rotate_logs()
                next_rotation = time.monotonic() + LOG_CHECK_INTERVAL
            if self._snapshot_requested.is_set():
                self._snapshot_requested.clear()
                self._take_snapshot()
            if time.monotonic() >= next_status or any(slot.changed for slot in self.slots):
                self.write_status()
                next_status = time.monotonic() + 1.0
            self._stop.wait(TICK)

    def _stop_if_essential_fatal(self) -> None:
        for slot in self.slots:
            component = slot.component
            if component.essential and slot.state == State.FATAL:
                self.write_status()
                raise ComponentError(f"{component.name} stopped for good ({slot.reason}); the stack is shut down{log_tail(component.log_path)}",
                                     f"mfcolab logs {component.name}, then mfcolab up")

    def _rotate_logs(self) -> None:
        for path in sorted(self.settings.logs_dir.glob("*.log")):
            try:
                if rotate_if_large(path):
                    log.info("rotated %s (over %d MiB)", path.name, MAX_BYTES // 2**20)
            except OSError as exc:
                log.warning("could not rotate %s: %s", path, exc.strerror)

    def _take_snapshot(self) -> None:
        if self.boot is None:
            return
        try:
            report = self.boot.mirror.snapshot()
            self.status.last_snapshot = {"at": time.time(), **dataclasses.asdict(report)}
        except MfcolabError as exc:
            self.status.last_snapshot = {"at": time.time(), "error": str(exc)}
        self.write_status()

    def _stop_all(self) -> None:
        self._set_phase("stopping")
        for slot in reversed(self.slots):
            component = slot.component
            if self.boot is not None and component is self.boot.postgres:
                self.boot.before_postgres_stops(self._set_phase)
            if component.alive() or component.pid is not None:
                if slot.state != State.STOPPING:
                    slot.move(State.STOPPING)
                log.info("waiting for %s to stop", component.name)
                component.stop(component.stop_timeout)
            if slot.state != State.STOPPED:
                slot.move(State.STOPPED)
        if self.boot is not None:
            self.boot.after_postgres_stopped(self._set_phase)

    # -- publishing -----------------------------------------------------------------------

    def _publish_url(self, url: str) -> None:
        self.status.public_url = url
        credentials.publish_connection(self.settings, url, credentials.access_key(self.settings))  # rotate-key may have changed it
        log.info("published %s to %s", url, self.settings.connection_file)
        self.write_status()

    def write_status(self) -> None:
        for slot in self.slots:
            slot.changed = False
        self.status.components = [slot.report() for slot in self.slots]
        self.status.mirror = _mirror_info(self.boot.mirror) if self.boot is not None else {}
        self.status.write(self.settings.status_file)


def _exit_code(component: Component) -> Any:
    process = getattr(component, "process", None)
    return process.exit_code() if process is not None else "?"


def _mirror_info(mirror: Mirror) -> dict[str, Any]:
    try:
        return dict(mirror.info())
    except Exception as exc:  # status must always be writable
        return {"state": "unknown", "error": str(exc)}
