"""Cards with the mfcolab profile: written by a flow in one working folder (the GPU side), found by
`get_cards` from another folder with the same profile (the CPU side), in the shared datastore."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import free_port
from stack_helpers import FLOWS, Stack, run_id_from

pytestmark = pytest.mark.slow

MARKER = "card-marker-7d1f"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("cards"), free_port(), free_port())
    stack.up()
    yield stack
    stack.down()


def python_in(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=folder, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def card_content(html: str) -> str:
    """What the card shows: Metaflow embeds it in the page as base64-encoded JSON."""
    embedded = re.findall(r'window\.__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', html)
    assert embedded, html[:500]
    return " ".join(base64.b64decode(blob).decode() for blob in embedded)


def test_cards_written_in_one_folder_are_read_from_another(stack: Stack, tmp_path: Path) -> None:
    gpu_folder, cpu_folder = tmp_path / "gpu-work", tmp_path / "cpu-work"
    gpu_folder.mkdir()
    cpu_folder.mkdir()
    env = stack.client_env()
    out = python_in(gpu_folder, env, str(FLOWS / "card_flow.py"), "--no-pylint", "run")
    run_id = run_id_from(out.stdout + out.stderr)

    read = python_in(cpu_folder, env, "-c", textwrap.dedent(f"""
        import json
        from metaflow import Run, namespace
        from metaflow.cards import get_cards
        namespace(None)
        task = Run("CardFlow/{run_id}")["start"].task
        cards = get_cards(task)
        print("RESULT=" + json.dumps(dict(count=len(cards), html=[c.get() for c in cards],
                                          ds_root=task.metadata_dict["ds-root"], task=task.id)))
    """))
    facts = json.loads(read.stdout.split("RESULT=")[-1])
    assert facts["count"] == 1 and MARKER in card_content(facts["html"][0])

    # The layout the UI's card routes read: <ds-root>/mf.cards/<flow>/runs/<run>/steps/<step>/tasks/<task>/cards/
    ds_root = Path(facts["ds_root"])
    assert ds_root == stack.root / "datastore" / ".metaflow"
    cards = ds_root / "mf.cards" / "CardFlow" / "runs" / run_id / "steps" / "start" / "tasks" / facts["task"] / "cards"
    written = list(cards.glob("blank-*.html"))
    assert len(written) == 1 and MARKER in card_content(written[0].read_text())
    assert not (gpu_folder / ".metaflow").exists()
