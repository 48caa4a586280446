"""Heartbeats from the task process itself (mfcolab's Metaflow extension), through the front door
of a real stack: they move, they stop when a process is SIGKILLed, a busy task keeps them, an
unknown Metaflow falls back to the stock sidecar, and what is recorded is what the stock client
records."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from extension_helpers import BackgroundFlow, heartbeat_values, last_heartbeat
from helpers import free_port, wait_until
from stack_helpers import Stack, run_id_from

pytestmark = pytest.mark.slow

# Long enough for two beats at the stock ten-second schedule: a heartbeat that has not moved
# after this has stopped.
SILENCE_SECONDS = 25
FALLBACK_LINE = "in-process heartbeats are off"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("heartbeats"), free_port(), free_port())
    stack.up()
    yield stack
    stack.down()


def gated(stack: Stack, tmp_path: Path, flow: str = "gated_flow.py", **env: str) -> tuple[BackgroundFlow, Path]:
    gate = tmp_path / "gate"
    variable = "BUSY_FLOW_GATE" if flow == "busy_flow.py" else "GATED_FLOW_GATE"
    return BackgroundFlow(stack, flow, {variable: str(gate), **env}, tmp_path).start(), gate


def test_heartbeats_move_every_ten_seconds_from_the_task_process(stack: Stack, tmp_path: Path) -> None:
    running, gate = gated(stack, tmp_path)
    try:
        run_id, task_id, _ = running.task("hold")
        task_beats = heartbeat_values(stack, f"GatedFlow/{run_id}/hold/{task_id}", 3)
        run_beats = heartbeat_values(stack, f"GatedFlow/{run_id}", 2)
        assert running.sidecar_processes() == []
        gate.touch()
        assert running.finish() == 0, running.output()[-3000:]
    finally:
        running.kill()
    assert all(later - earlier >= 10 for earlier, later in pairwise(task_beats))
    assert run_beats[1] - run_beats[0] >= 10
    assert "mfcolab:" not in running.output()  # silent, as the stock sidecar is


def test_heartbeats_sigkilled_run_and_task_stop_beating(stack: Stack, tmp_path: Path) -> None:
    running, _ = gated(stack, tmp_path)
    try:
        run_id, task_id, task_pid = running.task("hold")
        task_path, run_path = f"GatedFlow/{run_id}/hold/{task_id}", f"GatedFlow/{run_id}"
        heartbeat_values(stack, task_path, 2)
        heartbeat_values(stack, run_path, 1)

        os.kill(running.process.pid, signal.SIGKILL)  # the runtime only: its task lives on
        running.process.wait(timeout=60)
        run_at_kill = last_heartbeat(stack, run_path)
        task_beats_meanwhile = heartbeat_values(stack, task_path, 2)
        time.sleep(max(0.0, SILENCE_SECONDS - 10))
        assert last_heartbeat(stack, run_path) == run_at_kill

        os.kill(task_pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{task_pid}").exists() or _zombie(task_pid), timeout=60, what="the task to die")
        task_at_kill = last_heartbeat(stack, task_path)
        time.sleep(SILENCE_SECONDS)
        assert last_heartbeat(stack, task_path) == task_at_kill
    finally:
        running.kill()
    assert task_beats_meanwhile[1] > task_beats_meanwhile[0]  # the orphaned task kept beating on its own


def test_heartbeats_a_task_busy_in_pure_python_keeps_beating(stack: Stack, tmp_path: Path) -> None:
    running, gate = gated(stack, tmp_path, "busy_flow.py")
    try:
        run_id, task_id, _ = running.task("spin")
        beats = heartbeat_values(stack, f"BusyFlow/{run_id}/spin/{task_id}", 3)
        gate.touch()
        assert running.finish() == 0, running.output()[-3000:]
    finally:
        running.kill()
    assert beats[2] - beats[0] >= 20
    rounds = stack.client(f"result = Run('BusyFlow/{run_id}')['spin'].task['rounds'].data")
    assert rounds > 0


def test_heartbeats_switched_off_the_stock_sidecar_beats(stack: Stack, tmp_path: Path) -> None:
    running, gate = gated(stack, tmp_path, METAFLOW_MFCOLAB_EXTENSION="0")
    try:
        run_id, task_id, _ = running.task("hold")
        heartbeat_values(stack, f"GatedFlow/{run_id}/hold/{task_id}", 2)
        assert len(running.sidecar_processes()) >= 1
        gate.touch()
        assert running.finish() == 0, running.output()[-3000:]
    finally:
        running.kill()
    assert FALLBACK_LINE not in running.output()


def test_heartbeats_unknown_metaflow_internals_fall_back_to_the_sidecar_with_one_line(stack: Stack, tmp_path: Path) -> None:
    # A Metaflow whose stock heartbeat method grew a parameter: an internals change the
    # extension does not know. Every process of the run loads it through sitecustomize.
    changed = tmp_path / "changed-metaflow"
    changed.mkdir()
    (changed / "sitecustomize.py").write_text(
        "import metaflow.plugins.metadata_providers.service as service\n"
        "_stock = service.ServiceMetadataProvider._start_heartbeat\n"
        "def _start_heartbeat(self, heartbeat_type, flow_id, run_id, step_name=None, task_id=None, options=None):\n"
        "    return _stock(self, heartbeat_type, flow_id, run_id, step_name, task_id)\n"
        "service.ServiceMetadataProvider._start_heartbeat = _start_heartbeat\n"
    )
    running, gate = gated(stack, tmp_path, PYTHONPATH=str(changed))
    try:
        run_id, task_id, _ = running.task("hold")
        heartbeat_values(stack, f"GatedFlow/{run_id}/hold/{task_id}", 2)
        heartbeat_values(stack, f"GatedFlow/{run_id}", 1)
        assert len(running.sidecar_processes()) >= 2  # the run's and the task's
        gate.touch()
        assert running.finish() == 0, running.output()[-3000:]
    finally:
        running.kill()
    warnings = [line for line in running.output().splitlines() if FALLBACK_LINE in line]
    assert len(warnings) == 1, running.output()[-3000:]
    assert "_start_heartbeat takes" in warnings[0]


def test_heartbeats_record_the_same_metadata_as_the_stock_client(stack: Stack) -> None:
    recorded = {}
    for switch in ("1", "0"):
        out = stack.run_flow("linear_flow.py", "run", "--alpha", "3", env={"METAFLOW_MFCOLAB_EXTENSION": switch})
        run_id = run_id_from(out.stderr + out.stdout)
        recorded[switch] = stack.client(f"""
            run = Run("LinearFlow/{run_id}")
            result = dict(
                ok=run.successful, finished=run.finished, message=run.data.message,
                system_tags=sorted(t.split(":")[0] for t in run.system_tags),
                steps={{s.id: dict(
                    metadata=sorted((m.name, m.type) for m in s.task.metadata),
                    artifacts=sorted(a.id for a in s.task),
                    heartbeat=s.task.finished_at is not None,
                ) for s in run}})
        """)
    assert recorded["1"] == recorded["0"]
    assert recorded["1"]["ok"] and recorded["1"]["finished"]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
