"""scripts/bench_flow.py stopped by SIGTERM or Ctrl-C (SIGINT) in the middle of a flow stops the
flow (its tasks too) and the stack it started: nothing it started is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import wait_until
from stack_helpers import mfcolab

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench_flow.py"


def _started_below(folder: Path) -> dict[int, bytes]:
    """Live processes (pid: command line) whose command line names `folder` or whose working
    folder is inside it: the stack (supervisor, Postgres, web, UI backend) and the flows with their tasks."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if state != "Z" and (str(folder).encode() in cmdline or cwd.startswith(str(folder))):
            found[int(entry)] = cmdline
    return found


def _flow_running(folder: Path) -> bool:
    return any(b"foreach_flow.py" in cmdline for cmdline in _started_below(folder).values())


def _clean_up(folder: Path) -> None:
    """Whatever a failed run left: the stack through `mfcolab down`, then the leftovers by pid."""
    for bench in folder.glob("mfcolab-bench-flow-*"):
        mfcolab("down", "--root", str(bench / "root"), "--local", str(bench / "local"), check=False)
    for pid in _started_below(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_bench_flow_stops_its_flow_and_its_stack_when_stopped(folder: Path, sig: signal.Signals) -> None:
    log = folder / "bench.log"
    env = {**os.environ, "TMPDIR": str(folder)}
    with open(log, "wb") as out:
        bench = subprocess.Popen([sys.executable, str(BENCH), "--rounds", "1", "--width", "40", "--max-workers", "2"],
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _flow_running(folder) or bench.poll() is not None, 600, what="the benchmark's first flow")
        assert bench.poll() is None, log.read_text()
        assert any(b"postgres" in cmdline for cmdline in _started_below(folder).values())
        bench.send_signal(sig)
        returncode = bench.wait(300)
        wait_until(lambda: not _started_below(folder), 60, what="every process the benchmark started to end")
        assert returncode == 128 + sig, log.read_text()
        assert f"stopped by {sig.name}" in log.read_text()
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(30)
        _clean_up(folder)
