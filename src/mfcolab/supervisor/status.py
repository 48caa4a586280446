"""The status file: what the supervisor knows, written for `up`, `status`, `down` and `snapshot`.

<local>/run/status.json holds one `StackStatus`, written atomically (mode 0600) by the supervisor
on every change and once a second. Readers call `StackStatus.read(path)`, which never raises: a
missing, partial or unparsable file, or one written by another version of mfcolab, reads as None
(with the reason logged), and callers treat None as "nothing known yet".
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..credentials import write_private

log = logging.getLogger(__name__)

VERSION = 1


@dataclass
class ComponentStatus:
    name: str
    state: str
    pid: int | None = None
    port: int | None = None
    since: float = 0.0
    restarts: int = 0
    reason: str = ""
    log: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the component's own info(): url, error, ...

    def to_dict(self) -> dict[str, Any]:
        flat = {k: v for k, v in dataclasses.asdict(self).items() if k != "details"}
        return {**flat, **self.details}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComponentStatus:
        known = {f.name for f in dataclasses.fields(cls)} - {"details"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   details={k: v for k, v in data.items() if k not in known})


@dataclass
class StackStatus:
    supervisor_pid: int
    started_at: float
    phase: str = "starting"
    ready: bool = False
    error: str = ""
    url: str = ""
    public_url: str = ""
    components: list[ComponentStatus] = field(default_factory=list)
    mirror: dict[str, Any] = field(default_factory=dict)
    last_snapshot: dict[str, Any] = field(default_factory=dict)  # "at", then the report or "error"

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["components"] = [c.to_dict() for c in self.components]
        return {"version": VERSION, **fields}

    def write(self, path: Path) -> None:
        write_private(path, json.dumps(self.to_dict(), indent=2, default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackStatus:
        """Raises KeyError, TypeError or ValueError when `data` is not a status of this version."""
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, this mfcolab reads version {VERSION}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["components"] = [ComponentStatus.from_dict(c) for c in data.get("components", [])]
        status = cls(**values)
        if not isinstance(status.supervisor_pid, int) or not isinstance(status.last_snapshot, dict):
            raise TypeError("unexpected field types")
        return status

    @classmethod
    def read(cls, path: Path) -> StackStatus | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # partial (a crash mid-write predates atomic writes) or unreadable
            log.warning("ignoring the status file %s: %s", path, exc)
            return None
        try:
            return cls.from_dict(data if isinstance(data, dict) else {})
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring the status file %s: %s", path, exc)
            return None
