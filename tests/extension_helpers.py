"""mfcolab's Metaflow extension seen from outside: a flow running in the background against a real
stack, watched the way the UI watches it (its heartbeats read through the front door, its
processes from /proc), and its cards read back with `get_cards` from another folder."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from helpers import wait_until
from stack_helpers import FLOWS, Stack, run_id_from

from mfcolab.supervisor.process import descendants

# "[12/hold/3 (pid 4567)] Task is starting." as the Metaflow runtime prints it.
_TASK_LINE = re.compile(r"\[(\d+)/(\w+)/(\d+) \(pid (\d+)\)\]")


@dataclass
class BackgroundFlow:
    """`python <flow> run` started in its own session; its output goes to a file."""

    stack: Stack
    flow: str
    env: dict[str, str]
    cwd: Path
    args: tuple[str, ...] = ()
    python: str = sys.executable
    process: subprocess.Popen[bytes] = field(init=False)
    log: Path = field(init=False)

    def start(self) -> BackgroundFlow:
        self.log = self.cwd / f"{self.flow}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [self.python, str(FLOWS / self.flow), "--no-pylint", "run", *self.args],
                stdout=out, stderr=subprocess.STDOUT, env={**self.stack.client_env(), **self.env}, cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def task(self, step: str, timeout: float = 300) -> tuple[str, str, int]:
        """(run id, task id, pid) of the step's task, once the runtime has said it started."""
        found: list[tuple[str, str, int]] = []

        def started() -> bool:
            found.extend((m[0], m[2], int(m[3])) for m in _TASK_LINE.findall(self.output()) if m[1] == step)
            return bool(found) or self.process.poll() is not None

        wait_until(started, timeout=timeout, interval=0.5, what=f"the {step} task of {self.flow} to start")
        assert found, f"{self.flow} ended before {step} started:\n{self.output()[-3000:]}"
        return found[0]

    def sidecar_processes(self) -> list[str]:
        """Command lines of the heartbeat sidecar processes below the flow process."""
        lines = []
        for pid in descendants([self.process.pid]):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "sidecar_worker.py" in cmdline and "heartbeat" in cmdline:
                lines.append(cmdline)
        return lines

    def finish(self, timeout: float = 300) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Whatever is left of the run, all at once."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in descendants([self.process.pid]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=60)


def last_heartbeat(stack: Stack, path: str) -> int | None:
    """last_heartbeat_ts of a run (`Flow/run`) or task (`Flow/run/step/task`), read through the front door."""
    parts = path.split("/")
    route = f"flows/{parts[0]}/runs/{parts[1]}"
    if len(parts) == 4:
        route += f"/steps/{parts[2]}/tasks/{parts[3]}"
    response = requests.get(f"{stack.url}/metadata/{route}", headers={"x-api-key": stack.key}, timeout=30)
    response.raise_for_status()
    value = response.json().get("last_heartbeat_ts")
    return None if value is None else int(value)


def heartbeat_values(stack: Stack, path: str, count: int, timeout: float = 120) -> list[int]:
    """The first `count` distinct heartbeat timestamps seen, polling once a second."""
    seen: list[int] = []

    def enough() -> bool:
        value = last_heartbeat(stack, path)
        if value is not None and (not seen or value != seen[-1]):
            seen.append(value)
        return len(seen) >= count

    wait_until(enough, timeout=timeout, interval=1.0, what=f"{count} distinct heartbeats of {path} (saw {seen})")
    return seen


def python_in(folder: Path, env: dict[str, str], *args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd=folder, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def read_cards(folder: Path, env: dict[str, str], run: str, step: str, python: str = sys.executable) -> dict[str, Any]:
    """`get_cards` on the step's task, run from `folder`: the cards' HTML, the task's ds-root and id."""
    read = python_in(folder, env, "-c", textwrap.dedent(f"""
        import json
        from metaflow import Run, namespace
        from metaflow.cards import get_cards
        namespace(None)
        task = Run("{run}")["{step}"].task
        cards = get_cards(task)
        print("RESULT=" + json.dumps(dict(html=[c.get() for c in cards], ds_root=task.metadata_dict["ds-root"],
                                          task=task.id)))
    """), python=python)
    facts: dict[str, Any] = json.loads(read.stdout.split("RESULT=")[-1])
    return facts


def card_content(html: str) -> str:
    """What a card shows: Metaflow embeds it in the page as base64-encoded JSON."""
    embedded = re.findall(r'window\.__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', html)
    assert embedded, html[:500]
    return " ".join(base64.b64decode(blob).decode() for blob in embedded)


CARD_MARKER = "card-marker-7d1f"  # what tests/flows/card_flow.py puts in its card


def check_card_round_trip(stack: Stack, tmp_path: Path, python: str = sys.executable) -> None:
    """card_flow.py run from one folder (the GPU side); its card read from another (the CPU side)
    and found in the shared datastore where the UI's card routes read it."""
    gpu_folder, cpu_folder = tmp_path / "gpu-work", tmp_path / "cpu-work"
    gpu_folder.mkdir()
    cpu_folder.mkdir()
    env = stack.client_env()
    out = python_in(gpu_folder, env, str(FLOWS / "card_flow.py"), "--no-pylint", "run", python=python)
    run_id = run_id_from(out.stdout + out.stderr)

    facts = read_cards(cpu_folder, env, f"CardFlow/{run_id}", "start", python=python)
    assert len(facts["html"]) == 1 and CARD_MARKER in card_content(facts["html"][0])

    # <ds-root>/mf.cards/<flow>/runs/<run>/steps/<step>/tasks/<task>/cards/<type>-<hash>.html
    ds_root = Path(facts["ds_root"])
    assert ds_root == stack.root / "datastore" / ".metaflow"
    cards = ds_root / "mf.cards" / "CardFlow" / "runs" / run_id / "steps" / "start" / "tasks" / facts["task"] / "cards"
    written = list(cards.glob("blank-*.html"))
    assert len(written) == 1 and CARD_MARKER in card_content(written[0].read_text())
    assert not (gpu_folder / ".metaflow").exists()
