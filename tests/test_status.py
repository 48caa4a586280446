"""The status file: a round trip, and reading what is not a status of this version without a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mfcolab.supervisor.status import VERSION, ComponentStatus, StackStatus


def a_status() -> StackStatus:
    return StackStatus(
        supervisor_pid=4321, started_at=1700000000.0, phase="running", ready=True, url="http://127.0.0.1:7860",
        components=[ComponentStatus("postgres", "running", pid=10, port=15432, restarts=1, log="/l/postgres.log"),
                    ComponentStatus("tunnel", "backoff", reason="no network", details={"url": None, "error": "rate limited"})],
        mirror={"state": "idle"}, last_snapshot={"at": 1700000100.0, "files": 3},
    )


def test_status_write_then_read_gives_the_same_status(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.json"
    a_status().write(path)
    assert StackStatus.read(path) == a_status()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_status_file_keeps_the_flat_shape_status_json_prints(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    a_status().write(path)
    data = json.loads(path.read_text())
    assert data["version"] == VERSION and data["supervisor_pid"] == 4321
    assert data["components"][1] == {"name": "tunnel", "state": "backoff", "pid": None, "port": None, "since": 0.0,
                                     "restarts": 0, "reason": "no network", "log": None, "url": None, "error": "rate limited"}


@pytest.mark.parametrize("content", [
    "",  # created, nothing written yet
    '{"supervisor_pid": 43',  # cut off
    "[1, 2]",  # JSON, not an object
    json.dumps({**a_status().to_dict(), "version": VERSION + 1}),  # a newer mfcolab wrote it
    json.dumps({k: v for k, v in a_status().to_dict().items() if k != "version"}),  # an older one
    json.dumps({**a_status().to_dict(), "components": [1, 2]}),  # components that are not objects
    json.dumps({**a_status().to_dict(), "supervisor_pid": "4321"}),
    json.dumps({"version": VERSION}),  # no pid
])
def test_status_read_of_a_foreign_or_partial_file_is_none(tmp_path: Path, content: str) -> None:
    path = tmp_path / "status.json"
    path.write_text(content)
    assert StackStatus.read(path) is None


def test_status_read_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert StackStatus.read(tmp_path / "nothing.json") is None


def test_status_read_ignores_fields_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps({**a_status().to_dict(), "added_later": 1}))
    assert StackStatus.read(path) == a_status()
