"""The lifecycle surface every supervised component offers.

`preflight()` checks what can be checked without side effects (a busy port, a missing binary);
`fetch(progress)` downloads or pulls what the component needs. `up` calls both in the
foreground, so the user sees errors and progress before anything detaches. A component is
started with `start()` (its own preparation, then spawn; it does not wait), counted as running
only once `healthy()` answers True, and stopped with `stop(timeout)`.
`ProcessComponent` covers the usual case: one child process in its own process group.
"""

from __future__ import annotations

import abc
import socket
from pathlib import Path
from typing import Any

from ..errors import PortBusyError
from ..types import Progress
from .process import ManagedProcess


class Component(abc.ABC):
    name: str = ""
    start_timeout: float = 30.0  # seconds to become healthy before the start counts as failed
    stop_timeout: float = 10.0
    essential: bool = True  # False: the stack comes up without it and keeps retrying it
    restart_limit: int | None = 3  # failed starts in a row before FATAL; None: keep retrying

    def preflight(self) -> None:
        """Raise MfcolabError (with a hint) if the component cannot start: port busy, binary missing.
        No side effects: `up` calls it before it starts anything."""

    def fetch(self, progress: Progress) -> None:
        """Download or pull what the component needs (idempotent; quick once done)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Check preconditions (raising MfcolabError with a hint) and spawn. Does not wait."""

    @abc.abstractmethod
    def healthy(self) -> bool:
        """A quick check (well under a second) that the component does its job."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """True while the component's process exists."""

    @abc.abstractmethod
    def stop(self, timeout: float) -> None:
        """Stop and wait; escalate to SIGKILL when `timeout` passes."""

    @property
    def pid(self) -> int | None:
        return None

    @property
    def port(self) -> int | None:
        return None

    @property
    def log_path(self) -> Path | None:
        return None

    def info(self) -> dict[str, Any]:
        """Extra fields for `status` (a URL, a version, ...)."""
        return {}


class ProcessComponent(Component):
    """A component that is one child process; subclasses say how to run it."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.log_dir = log_dir
        self.process: ManagedProcess | None = None

    @abc.abstractmethod
    def make_process(self) -> ManagedProcess:
        """Build the process to spawn (after preflight checks passed)."""

    def before_spawn(self) -> None:
        """Everything a start needs before the spawn; raise MfcolabError if it cannot start."""
        self.preflight()

    def start(self) -> None:
        self.before_spawn()
        self.process = self.make_process()
        self.process.spawn()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self, timeout: float) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(port: int, what: str, flag: str, host: str = "127.0.0.1") -> None:
    if not port_is_free(port, host):
        raise PortBusyError(port, what, flag)


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
