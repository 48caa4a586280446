"""Which stack ships to a root folder: the last one to start shipping there.

Two stacks must never ship to one root folder: each would rewrite the manifest from its own
copy and sweep the other's WAL away. That happens on Colab when a new runtime starts while the
old one, forgotten in another tab, still runs. So the mirror claims the folder on its first
cycle (`snapshots/writer.json`, replaced atomically) and, before every later cycle writes
anything, checks that the claim is still its own. The newest stack wins: it is the one the user
is looking at, and it has just restored from what the older one shipped. The older one stops
shipping (its mirror reports why) and leaves the folder alone.

Across machines the claim travels through Drive's own sync, so the hand-over completes when the
old machine sees the new file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time

from ..errors import SnapshotError
from ..files import write_atomic
from ..settings import Settings
from ..sharedfile import read_regular
from ..supervisor.process import pid_alive
from . import layout
from .manifest import json_bytes

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Claim:
    stack: str  # random id of one mirror, i.e. one run of a supervisor
    host: str
    pid: int
    since: float

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"the stack on {self.host} (pid {self.pid}, shipping since {started})"


def read_claim(settings: Settings) -> Claim | None:
    """The current claim; None when there is none or it cannot be read (treated as unclaimed)."""
    try:
        data = json.loads(read_regular(layout.writer_claim_path(settings), 64 * 1024))
        return Claim(str(data["stack"]), str(data["host"]), int(data["pid"]), float(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Writer:
    """The claim of one mirror on its root folder."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.claim = Claim(secrets.token_hex(8), socket.gethostname(), os.getpid(), 0.0)
        self.claimed = False
        self.superseded_by: Claim | None = None  # once another stack claims the folder, for good
        self._lock = threading.Lock()  # the mirror's cycles and its base upload both ask

    def ensure(self) -> None:
        """Claim the folder on the first call; on later calls, refuse if another stack claimed it since."""
        with self._lock:
            self._ensure()

    def refuse_if_superseded(self) -> None:
        """Raise if another stack has taken the folder over (known without reading the root folder)."""
        if self.superseded_by is not None:
            raise self._refusal(self.superseded_by)

    def _ensure(self) -> None:
        self.refuse_if_superseded()
        current = read_claim(self.settings)
        if not self.claimed:
            self._take_over(current)
            return
        if current is not None and current.stack != self.claim.stack:
            self.superseded_by = current
            raise self._refusal(current)

    def _refusal(self, other: Claim) -> SnapshotError:
        return SnapshotError(
            f"the root folder {self.settings.root} is now shipped to by {other.describe()}; "
            "this stack no longer writes to it",
            "keep using the other stack; stop this one with mfcolab down",
        )

    def _take_over(self, previous: Claim | None) -> None:
        self.claim = dataclasses.replace(self.claim, since=time.time())
        self.settings.snapshots_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(layout.writer_claim_path(self.settings), [json_bytes(dataclasses.asdict(self.claim))])
        self.claimed = True
        if previous is not None and previous.stack != self.claim.stack and _may_still_run(previous):
            log.warning("this stack now ships to %s; %s stops shipping when it sees this",
                        self.settings.snapshots_dir, previous.describe())


def _may_still_run(claim: Claim) -> bool:
    """A claim from another machine may be live; one from this machine only if its process is."""
    return claim.host != socket.gethostname() or pid_alive(claim.pid)
