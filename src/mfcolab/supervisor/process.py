"""A child process in its own process group, with its output in a log file.

Stopping escalates against a deadline: the stop signal to the whole group, then SIGKILL.
A process that is already gone (ESRCH) counts as stopped.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..logfiles import open_log

log = logging.getLogger(__name__)

KILL_WAIT = 5.0  # seconds to wait for SIGKILL to take effect


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open_log(self.log_path) as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                **as_user(self.user),
                start_new_session=True,
                close_fds=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass  # already gone: it probably just exited on its own
        except PermissionError:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop signal to the group, wait up to `timeout`, then SIGKILL the group."""
        if self.popen is None:
            return
        if self.alive():
            self.signal_group(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
        # Children of the leader (a proot, a shell's grandchild) may outlive it: always sweep the group.
        self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %s) survived SIGKILL", self.name, self.popen.pid)

    def tail(self, lines: int = 20) -> str:
        return tail_file(self.log_path, lines)


def as_user(user: str | None) -> dict[str, Any]:
    """Popen keywords that run a child as `user` with that user's own group and no other: without
    `group` and `extra_groups` the child would keep root's gid 0 and supplementary groups."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def tail_file(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            kept = handle.read().splitlines()[-lines:] if lines > 0 else []
            return b"\n".join(kept).decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def stop_processes(pids: Sequence[int], timeout: float, *, kill_group: bool = False,
                   waiting: Callable[[], None] | None = None) -> bool:
    """SIGTERM each of `pids`, wait up to `timeout` for all to exit (calling `waiting` on each
    poll, to show progress), then SIGKILL what is left: its whole process group with
    `kill_group`. A process already gone counts as stopped. True if all exited before the SIGKILL.

    For processes this one did not spawn; `ManagedProcess.stop` is the same escalation for an
    own child, which it also reaps."""
    _send(pids, signal.SIGTERM, group=False)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        if waiting is not None:
            waiting()
        time.sleep(0.05)
    left = [pid for pid in pids if pid_alive(pid)]
    if not left:
        return True
    _send(left, signal.SIGKILL, group=kill_group)
    deadline = time.monotonic() + KILL_WAIT
    while any(pid_alive(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.05)
    return False


def _send(pids: Iterable[int], sig: int, group: bool) -> None:
    for pid in pids:
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # gone already, or a reused pid that is not ours


def find_processes(matches: Callable[[bytes, bytes], bool]) -> list[int]:
    """Live processes other than this one whose command line and environment (raw bytes from
    /proc, NUL-separated) satisfy `matches`; processes that end or cannot be read are skipped."""
    own = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if matches(cmdline, environ) and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def in_groups(groups: Iterable[int]) -> list[int]:
    """Live processes whose process group is one of `groups`."""
    wanted = set(groups)
    return [pid for pid, fields in _process_stats() if int(fields[2]) in wanted and fields[0] != "Z"]


def descendants(roots: Iterable[int]) -> set[int]:
    """Every live process below `roots` (children, grandchildren, ...), from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for pid, fields in _process_stats():
        children.setdefault(int(fields[1]), []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _process_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command: state, ppid, pgrp, ...) of every
    process that can still be read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        yield int(entry), stat[stat.rindex(")") + 2:].split()
