"""A flow running in the background against a real stack, watched the way the UI watches it:
its task and run heartbeats read through the front door, its processes read from /proc."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests

from helpers import wait_until
from mfcolab.process import descendants
from stack_helpers import FLOWS, Stack

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
    process: subprocess.Popen[bytes] = field(init=False)
    log: Path = field(init=False)

    def start(self) -> BackgroundFlow:
        self.log = self.cwd / f"{self.flow}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(FLOWS / self.flow), "--no-pylint", "run", *self.args],
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
