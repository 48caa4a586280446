"""Control of a running stack from another process: find it, stop it, ask it for a snapshot,
follow its logs.

The supervisor's pid is in <local>/run/supervisor.pid, its view of the world in the status
file (status.py). `down` sends SIGTERM and shows the phases the supervisor reports while it
stops; `snapshot_now` sends SIGUSR1 and waits for the report. A supervisor that was killed
leaves its components running: `sweep_leftovers` kills their process groups (after checking
that each recorded pid still belongs to this stack).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import SnapshotError, StackStateError
from ..settings import Settings
from ..types import Progress
from .process import in_groups, pid_alive, stop_processes, tail_file
from .status import StackStatus


def supervisor_pid(settings: Settings) -> int | None:
    try:
        pid = int(settings.supervisor_pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def read_status(settings: Settings) -> StackStatus | None:
    return StackStatus.read(settings.status_file)


def down(settings: Settings, *, progress: Progress, timeout: float = 180.0) -> bool:
    """Stop the supervisor (which stops everything in reverse order). False if nothing ran."""
    pid = supervisor_pid(settings)
    if pid is None:
        sweep_leftovers(settings)
        return False
    shown = ""

    def show_phase() -> None:
        nonlocal shown
        status = read_status(settings)
        if status is not None and status.phase != shown:
            shown = status.phase
            progress(shown)

    if not stop_processes([pid], timeout, kill_group=True, waiting=show_phase):
        progress(f"the supervisor did not stop within {timeout:.0f} s; it was killed")
    sweep_leftovers(settings)
    return True


def sweep_leftovers(settings: Settings) -> None:
    """Kill component process groups a killed supervisor left behind (their pids are in the status file)."""
    status = read_status(settings)
    killed = []
    for component in status.components if status is not None else []:
        pid = component.pid
        if pid and pid_alive(pid) and _belongs_to_stack(pid, settings):
            try:
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 10
    while in_groups(killed) and time.monotonic() < deadline:  # every member, not just the leader (proot's children)
        time.sleep(0.05)
    settings.supervisor_pid_file.unlink(missing_ok=True)


def _belongs_to_stack(pid: int, settings: Settings) -> bool:
    """A recorded pid may have been reused: only kill a process whose command or environment names our folders."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(settings.local) in cmdline or str(settings.local) in environ or str(settings.pgdata) in cmdline


def snapshot_now(settings: Settings, *, progress: Progress, timeout: float = 600.0) -> dict[str, Any]:
    """Ask the running supervisor for a snapshot (SIGUSR1) and wait for its report."""
    pid = supervisor_pid(settings)
    if pid is None:
        raise StackStateError(f"no stack is running for {settings.local}; `down` already took a final snapshot",
                              "mfcolab status, or mfcolab up")
    before = _last_snapshot(settings).get("at")
    os.kill(pid, signal.SIGUSR1)
    progress("snapshot requested")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        report = _last_snapshot(settings)
        if report.get("at") and report.get("at") != before:
            if report.get("error"):
                raise SnapshotError(f"the snapshot failed: {report['error']}", "mfcolab logs supervisor")
            return report
        time.sleep(0.1)
    raise StackStateError("the supervisor did not report a snapshot", "mfcolab logs supervisor")


def _last_snapshot(settings: Settings) -> dict[str, Any]:
    status = read_status(settings)
    return status.last_snapshot if status is not None else {}


def component_logs(settings: Settings) -> dict[str, Path]:
    return {p.stem: p for p in sorted(settings.logs_dir.glob("*.log"))}


def follow(path: Path, lines: int, keep_going: Callable[[], bool] = lambda: True) -> Iterator[str]:
    yield from tail_file(path, lines).splitlines()
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        while keep_going():
            line = handle.readline()
            if line:
                yield line.decode(errors="replace").rstrip("\n")
            else:
                time.sleep(0.2)
