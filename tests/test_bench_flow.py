"""scripts/bench_flow.py stopped by SIGTERM or Ctrl-C (SIGINT) in the middle of a flow stops the
flow (its tasks too) and the stack it started: nothing it started is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import processes_below, wait_until
from stack_helpers import mfcolab

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench_flow.py"


def _flow_running(folder: Path) -> bool:
    return any(b"foreach_flow.py" in cmdline for cmdline in processes_below(folder).values())


def _clean_up(folder: Path) -> None:
    """Whatever a failed run left: the stack through `mfcolab down`, then the leftovers by pid."""
    for bench in folder.glob("mfcolab-bench-flow-*"):
        mfcolab("down", "--root", str(bench / "root"), "--local", str(bench / "local"), check=False)
    for pid in processes_below(folder):
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
        assert any(b"postgres" in cmdline for cmdline in processes_below(folder).values())
        bench.send_signal(sig)
        returncode = bench.wait(300)
        wait_until(lambda: not processes_below(folder), 60, what="every process the benchmark started to end")
        assert returncode == 128 + sig, log.read_text()
        assert f"stopped by {sig.name}" in log.read_text()
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(30)
        _clean_up(folder)
