"""The real stack (`mfcolab up`) killed with SIGKILL, its local folder wiped, and brought back.

The crash trials are tests/crashtrials/realstack.py's (scripts/crash_restore.py runs many), run a few times; the other tests restore
a stack that ran real flows and resume them, and check the orderly stop path.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crashtrials import realstack as crash
from helpers import free_port, wait_until
from stack_helpers import FLOWS, Stack, mfcolab, run_id_from

pytestmark = pytest.mark.slow



def test_crash_restore_trials_every_killed_stack_comes_back(tmp_path: Path) -> None:
    results = crash.run_trials(tmp_path, trials=len(crash.KILL_MOMENTS), seed=20261123, run_seconds=(2.0, 6.0), extra=[])
    for result in results:
        print(crash.format_trial(result))
    assert [r.error for r in results if not r.restored] == []
    # an "after-snapshot" trial keeps every run acknowledged before its snapshot (checked in the
    # trial), so the checks above looked at restored runs, not only at an empty database
    assert sum(r.acked - r.missing for r in results) > 0
    assert crash.processes_using(tmp_path / "local") == []


def _flow_process(stack: Stack, flow: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """A flow run in the background, in its own process group (so it can be killed with its workers)."""
    return subprocess.Popen([sys.executable, str(FLOWS / flow), "--no-pylint", *args], env={**stack.client_env(), **env},
                            cwd=stack.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _run_id_of_running_flow(stack: Stack, flow: str) -> str:
    """The newest run of `flow` once its `hold` step has a task (the flow sits in it)."""
    found: list[str] = []

    def holding() -> bool:
        facts = stack.client(f"""
            from metaflow.exception import MetaflowNotFound
            try:
                run = Flow("{flow}").latest_run
            except MetaflowNotFound:  # the flow process has not registered the flow yet
                run = None
            result = dict(id=run.id, steps=sorted(s.id for s in run)) if run else None
        """)
        if facts and "hold" in facts["steps"]:
            found.append(facts["id"])
            return True
        return False

    wait_until(holding, timeout=300, interval=1.0, what=f"{flow} to reach its hold step")
    return found[-1]


def test_crash_restore_flows_failed_and_mid_run_resume_after_a_restore(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    stack.up()
    gate = tmp_path / "gate"
    try:
        failed = stack.run_flow("resumable_flow.py", "run", check=False)
        assert failed.returncode != 0
        failed_id = run_id_from(failed.stderr + failed.stdout)
        running = _flow_process(stack, "gated_flow.py", "run", env={"GATED_FLOW_GATE": str(gate)})
        try:
            running_id = _run_id_of_running_flow(stack, "GatedFlow")
            # a snapshot taken while the flow runs; then everything dies at once
            mfcolab("snapshot", *stack.folder_args())
            crash.kill_everything(crash.stack_processes(stack))
        finally:
            os.killpg(running.pid, signal.SIGKILL)
            running.communicate(timeout=60)
        shutil.rmtree(stack.local)

        restored = stack.up()
        assert "restoring generation" in restored.stderr
        before = stack.client(f"""
            failed, held = Run("ResumableFlow/{failed_id}"), Run("GatedFlow/{running_id}")
            result = dict(failed_ok=failed.successful, fragile_ok=failed["fragile"].task.successful,
                          held_finished=held.finished, held_start_ok=held["start"].task.successful)
        """)
        assert before == {"failed_ok": False, "fragile_ok": False, "held_finished": False, "held_start_ok": True}

        resumed = stack.run_flow("resumable_flow.py", "resume", "--origin-run-id", failed_id, env={"RESUMABLE_FLOW_OK": "1"})
        resumed_id = run_id_from(resumed.stderr + resumed.stdout)
        gate.write_text("open")
        resumed_held = stack.run_flow("gated_flow.py", "resume", "--origin-run-id", running_id,
                                      env={"GATED_FLOW_GATE": str(gate)})
        resumed_held_id = run_id_from(resumed_held.stderr + resumed_held.stdout)
        facts = stack.client(f"""
            a, b = Run("ResumableFlow/{resumed_id}"), Run("GatedFlow/{resumed_held_id}")
            result = dict(a_ok=a.successful, a_value=a.data.result, a_origin=a["start"].task.metadata_dict.get("origin-run-id"),
                          b_ok=b.successful, b_value=b.data.result, b_origin=b["start"].task.metadata_dict.get("origin-run-id"))
        """)
        assert facts == {"a_ok": True, "a_value": 42, "a_origin": failed_id,
                         "b_ok": True, "b_value": 10, "b_origin": running_id}
    finally:
        stack.down(check=False)


def acknowledged_runs(stack: Stack, flow: str, count: int) -> crash.Writer:
    """Metaflow's per-task write sequence through the front door until `count` runs were acknowledged
    (or the writer failed); returns the stopped writer with its acknowledgements."""
    writer = crash.Writer(stack.port, stack.key, flow)
    writer.start()
    wait_until(lambda: len(writer.acks) >= count or not writer.is_alive(), timeout=120, what=f"{count} acknowledged runs")
    writer.stopping.set()
    writer.join(60)
    return writer


def test_crash_restore_down_wipe_up_loses_nothing_and_status_shows_the_snapshot(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    stack.up()
    try:
        # writes right up to `down`: the orderly stop ships them without waiting for the mirror's cycle
        writer = acknowledged_runs(stack, "OrderlyFlow", 20)
        assert len(writer.acks) >= 20, writer.error
        out = stack.run_flow("linear_flow.py", "run")
        run_id = run_id_from(out.stderr + out.stdout)
        stack.down()
        shutil.rmtree(stack.local)

        stack.up()
        reader = crash.Reader(stack.port, stack.key)
        try:
            assert {a.run for a in writer.acks} <= reader.runs("OrderlyFlow")
            assert all(reader.complete("OrderlyFlow", a) for a in writer.acks)
        finally:
            reader.close()
        assert stack.client(f'result = Run("LinearFlow/{run_id}").successful') is True

        text = mfcolab("status", *stack.folder_args()).stdout
        line = next(l for l in text.splitlines() if l.startswith("snapshots:"))
        assert re.search(r"newest restorable state \d+ (s|min|h) old, \d+\.\d MB \(generation \d{8}T", line), text
        assert re.search(r"^mirror: (idle|shipping)", text, re.M), text
    finally:
        stack.down(check=False)


def test_crash_restore_restore_move_aside_keeps_the_current_database(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    stack.up()
    try:
        writer = acknowledged_runs(stack, "AsideFlow", 5)
    finally:
        stack.down()
    assert len(writer.acks) >= 5, writer.error

    refused = mfcolab("restore", *stack.folder_args(), check=False)
    assert refused.returncode == 1
    assert "already holds a database" in refused.stderr and "--move-aside" in refused.stderr
    moved = mfcolab("restore", *stack.folder_args(), "--move-aside")
    assert "moved the current database aside" in moved.stderr
    aside = [p for p in stack.local.iterdir() if p.name.startswith("pgdata.before-restore-")]
    assert len(aside) == 1 and (aside[0] / "PG_VERSION").exists()
    assert "restored generation" in moved.stdout

    try:
        stack.up()
        reader = crash.Reader(stack.port, stack.key)
        try:
            assert {a.run for a in writer.acks} <= reader.runs("AsideFlow")
        finally:
            reader.close()
    finally:
        stack.down(check=False)


def test_crash_restore_down_before_any_mirror_cycle_still_leaves_a_restorable_state(tmp_path: Path) -> None:
    """With the loop off no base is ever taken while running: `down` must take one before
    Postgres stops, since the final snapshot can only extend an existing generation."""
    stack = Stack(tmp_path, free_port(), free_port(), ["--snapshot-interval", "0"])
    stack.up()
    try:
        writer = acknowledged_runs(stack, "NoCycleFlow", 5)
        assert len(writer.acks) >= 5, writer.error
        assert not (stack.root / "snapshots" / "manifest.json").exists()
        stack.down()
        shutil.rmtree(stack.local)

        assert "restoring generation" in stack.up().stderr
        reader = crash.Reader(stack.port, stack.key)
        try:
            assert {a.run for a in writer.acks} <= reader.runs("NoCycleFlow")
        finally:
            reader.close()
    finally:
        stack.down(check=False)
