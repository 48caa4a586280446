"""`mfcolab status` text from the shapes the mirror and the restore module really produce."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from helpers import free_port, make_settings
from mfcolab.errors import SnapshotError
from mfcolab.replica.mirror import Mirror
from mfcolab.replica.restore import GenerationInfo
from mfcolab.supervisor.status_view import render


def _report(tmp_path: Path, mirror: dict, snapshots: object) -> dict:
    return {"running": True, "phase": "running", "supervisor_pid": 1, "components": [], "url": "http://127.0.0.1:1",
            "root": str(tmp_path / "root"), "local": str(tmp_path / "local"), "mirror": mirror, "snapshots": snapshots}


def test_status_view_shows_the_newest_generation_with_age_and_size(tmp_path: Path) -> None:
    now = time.time()
    older = GenerationInfo("20261123T100000000Z-aaaa", now - 7200, now - 3600, 1, 2_000_000, False)
    newest = GenerationInfo("20261123T110000000Z-bbbb", now - 600, now - 42, 2, 4_400_000, True)
    text = render(_report(tmp_path, {"state": "idle", "generations": 2},
                          [dataclasses.asdict(older), dataclasses.asdict(newest)]))
    assert "snapshots: newest restorable state 4" in text  # 42 s, give or take the clock
    assert "4.4 MB (generation 20261123T110000000Z-bbbb, 2 generations in" in text
    assert "mirror: idle" in text


def test_status_view_shows_a_failing_mirror_with_its_reason(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    mirror = Mirror(settings, f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres")  # nothing listens there
    with pytest.raises(SnapshotError):
        mirror.sync_once()
    info = mirror.info()
    text = render(_report(tmp_path, info, []))
    line = next(l for l in text.splitlines() if l.startswith("mirror:"))
    assert line.startswith("mirror: failing (1 failed attempt: ") and info["reason"] in line
    assert f"snapshots: none yet in {tmp_path / 'root'}" in text


def test_status_view_unreadable_root_and_stopped_stack(tmp_path: Path) -> None:
    text = render({"running": False, "root": "/r", "local": "/l", "snapshots": {"error": "Transport endpoint is not connected"}})
    assert text.splitlines() == ["not running (local folder /l)", "snapshots: unreadable (Transport endpoint is not connected)"]
