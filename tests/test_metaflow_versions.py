"""mfcolab's Metaflow extension on the Metaflow versions users have: the newest minor (the suite's
own Metaflow, tested everywhere else) and the two minors before it, each in a venv of its own
with Metaflow from PyPI and the mfcolab wheel (without its dependencies), against one real stack.

Each version: a task beats from its own process (no sidecar, no fallback line), and a card
written from one folder is read from another. Bump VERSIONS when a new Metaflow minor appears.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from extension_helpers import BackgroundFlow, check_card_round_trip, heartbeat_values
from helpers import free_port
from stack_helpers import Stack

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# The newest patch release of each of the two minors before the suite's own Metaflow.
VERSIONS = ["2.17.5", "2.18.13"]


def run(*args: str) -> None:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), str(REPO))
    return next(folder.glob("mfcolab-*.whl"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("versions"), free_port(), free_port())
    stack.up()
    yield stack
    stack.down()


@pytest.mark.parametrize("version", VERSIONS)
def test_metaflow_versions_heartbeats_and_cards(version: str, wheel: Path, stack: Stack, tmp_path: Path) -> None:
    venv = tmp_path / f"metaflow-{version}"
    run(sys.executable, "-m", "venv", str(venv))
    python = str(venv / "bin" / "python")
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"metaflow=={version}")
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", str(wheel))
    assert subprocess.run([python, "-c", "import metaflow; print(metaflow.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip() == version

    gate = tmp_path / "gate"
    running = BackgroundFlow(stack, "gated_flow.py", {"GATED_FLOW_GATE": str(gate)}, tmp_path, python=python).start()
    try:
        run_id, task_id, _ = running.task("hold")
        beats = heartbeat_values(stack, f"GatedFlow/{run_id}/hold/{task_id}", 2)
        heartbeat_values(stack, f"GatedFlow/{run_id}", 1)
        assert running.sidecar_processes() == []
        gate.touch()
        assert running.finish() == 0, running.output()[-3000:]
    finally:
        running.kill()
    assert beats[1] - beats[0] >= 10
    assert "mfcolab:" not in running.output()

    check_card_round_trip(stack, tmp_path, python)
