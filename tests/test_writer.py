"""Two stacks on one root folder (a new runtime started while the old one still runs): the
newest ships, the older stops writing there, and what the newest shipped restores whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import free_port, wait_until
from mfcolab.replica import layout
from stack_helpers import Stack, mfcolab, run_id_from

pytestmark = pytest.mark.slow


def claim_pid(root: Path) -> int | None:
    try:
        return int(json.loads((root / "snapshots" / layout.WRITER_CLAIM).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def ran(stack: Stack, *args: str) -> str:
    out = stack.run_flow("linear_flow.py", "run", *args)
    return run_id_from(out.stderr + out.stdout)


def linear_runs(stack: Stack, *tags: str) -> set[str]:
    return set(stack.client(f'result = [r.id for r in Flow("LinearFlow").runs(*{list(tags)!r})]'))


def test_writer_the_newest_stack_ships_and_the_older_one_stops(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = Stack(tmp_path / "old", free_port(), free_port())
    old.up()
    new = Stack(tmp_path / "new", free_port(), free_port(), shared_root=old.root)
    try:
        before = ran(old)
        mfcolab("snapshot", *old.folder_args())
        assert claim_pid(old.root) == old.status()["supervisor_pid"]

        started = new.up()  # another machine's `up`: restores what the old stack shipped
        assert "restoring generation" in started.stderr
        new_pid = new.status()["supervisor_pid"]
        wait_until(lambda: claim_pid(old.root) == new_pid, timeout=60, what="the new stack to claim the root folder")
        on_new = ran(new)

        # the old stack still serves its own database, but ships nothing more
        ran(old, "--tag", "after-the-hand-over")
        refused = mfcolab("snapshot", *old.folder_args(), check=False)
        assert refused.returncode != 0
        assert f"pid {new_pid}" in refused.stderr and "no longer writes" in refused.stderr
        wait_until(lambda: _refused_for(old.status()["mirror"], new_pid), timeout=30,
                   what="the old stack's mirror to say why it stopped shipping")
        assert claim_pid(old.root) == new_pid

        mfcolab("snapshot", *new.folder_args())
        new.down()
        old.down()  # its final snapshot is refused too; it still stops everything
        assert claim_pid(old.root) == new_pid

        shutil.rmtree(new.local)
        new.up()  # the next runtime restores what the newest stack shipped, whole
        assert linear_runs(new) == {before, on_new}
        assert linear_runs(new, "after-the-hand-over") == set()
    finally:
        new.down(check=False)
        old.down(check=False)


def _refused_for(mirror: dict, new_pid: int) -> bool:
    return mirror.get("state") == "failing" and f"pid {new_pid}" in mirror.get("reason", "")
