"""scripts/ui_stack.py, the part scripts/bench_ui.py and scripts/bench_live.py share: a real stack
with the native UI, answering with its key, stopped on the way out even when the benchmark fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import processes_below

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

FAILING_BENCHMARK = textwrap.dedent("""
    import json, sys
    import requests
    sys.path.insert(0, sys.argv[1])
    from ui_stack import ui_stack

    with ui_stack("mfcolab-bench-check-") as stack:
        answer = requests.get(f"{stack.front}/api/runs", headers={"x-api-key": stack.key}, timeout=60)
        print(json.dumps({"web": stack.web_pid(), "status": answer.status_code, "tmp": str(stack.tmp)}), flush=True)
        raise RuntimeError("the benchmark failed")
""")


@pytest.mark.parametrize("script", ["bench_ui.py", "bench_live.py"])
def test_the_ui_benchmarks_import_what_they_share(script: str) -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_ui_stack_serves_the_native_ui_and_is_down_after_a_failure(folder: Path) -> None:
    done = subprocess.run([sys.executable, "-c", FAILING_BENCHMARK, str(SCRIPTS)], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(folder)}, timeout=900)
    try:
        assert done.returncode == 1 and "RuntimeError: the benchmark failed" in done.stderr, done.stderr
        seen = json.loads(done.stdout.splitlines()[0])
        assert seen["status"] == 200 and seen["web"] > 0
        assert Path(seen["tmp"]).parent == folder and not Path(seen["tmp"]).exists()
        assert processes_below(folder) == {} and not Path(f"/proc/{seen['web']}").exists()
    finally:
        for pid in processes_below(folder):
            os.kill(pid, 9)
