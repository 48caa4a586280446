"""scripts/bench_keyless.py starts the front door from a revision from before the move into
packages (its entry module was `mfcolab.web` then) as well as from this tree."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
BEFORE_THE_MOVE = "6edaea6"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_keyless", REPO / "scripts" / "bench_keyless.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _have_revision(revision: str) -> bool:
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{revision}^{{commit}}"], capture_output=True)
    return found.returncode == 0


@pytest.mark.parametrize("revision", [BEFORE_THE_MOVE, None], ids=["before-the-move", "this-tree"])
def test_bench_keyless_starts_the_door_of_either_tree(folder: Path, revision: str | None) -> None:
    if revision is not None and not _have_revision(revision):
        pytest.skip(f"{revision} is not in this clone's history")
    bench = _bench()
    source = REPO / "src" if revision is None else bench.export_source(revision, folder)
    child, url = bench.start_door(source, folder / "door")
    try:
        assert requests.get(url + "/healthz", timeout=10).ok
    finally:
        child.terminate()
        child.wait(10)
