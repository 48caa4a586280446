"""The real Metaflow client runs real flows against the native service and reads them back
through the Client API (both in their own processes, configured only by the environment)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FLOWS = Path(__file__).parent / "flows"

pytestmark = pytest.mark.slow


@pytest.fixture()
def client_env(service_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "metaflow-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    env.update({
        "METAFLOW_HOME": str(home),
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": service_url,
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "datastore"),
        "USERNAME": "tester",
        "USER": "tester",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def run_flow(env: dict[str, str], flow: str, *args: str, extra_env: dict[str, str] | None = None,
             expect_ok: bool = True) -> tuple[str, str]:
    """Runs `python <flow> <args>`; returns (run id, combined output)."""
    proc = subprocess.run(
        [sys.executable, str(FLOWS / flow), "--no-pylint", *args],
        env={**env, **(extra_env or {})}, cwd=FLOWS, capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == expect_ok, output[-4000:]
    match = re.search(r"Workflow starting \(run-id (\S+)\)", output)
    assert match, output[-4000:]
    return match.group(1), output


def read_back(env: dict[str, str], flow_name: str, run_id: str, mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(FLOWS / "read_back.py"), flow_name, run_id, mode],
        env=env, cwd=FLOWS, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("READBACK "))
    return json.loads(line[len("READBACK "):])


def test_linear_flow_with_parameters_tags_and_tag_mutation(client_env: dict[str, str]) -> None:
    run_id, _ = run_flow(client_env, "service_linear_flow.py", "run", "--greeting", "hi", "--tag", "cli-tag")
    data = read_back(client_env, "ServiceLinearFlow", run_id, "linear")
    assert data["successful"] and data["finished"]
    assert run_id in data["flow_runs"]
    assert data["steps"] == ["end", "middle", "start"]
    assert (data["x"], data["message"]) == (42, "hi world")
    assert data["tags"] == ["cli-tag"]
    assert "user:tester" in data["system_tags"]
    assert data["tags_after"] == ["added-tag", "cli-tag", "t4"]
    assert data["remove_system_tag"] == "MetaflowTaggingError"
    [start] = data["tasks"]["start"]
    assert start["children"] == [t["pathspec"] for t in data["tasks"]["middle"]]
    [end] = data["tasks"]["end"]
    assert end["parents"] == [t["pathspec"] for t in data["tasks"]["middle"]]
    assert end["metadata"]["attempt_ok"] == "True"


def test_foreach_with_a_retry_then_a_failure_and_resume(client_env: dict[str, str]) -> None:
    failed_id, _ = run_flow(client_env, "service_foreach_flow.py", "run", "--max-workers", "4",
                            extra_env={"MFC_FAIL_CHECK": "1"}, expect_ok=False)
    failed = read_back(client_env, "ServiceForeachFlow", failed_id, "foreach")
    assert not failed["successful"]

    # foreach-stack arrives as a list; it reads back as a string that keeps every frame.
    body = failed["tasks"]["body"]
    assert len(body) == 3
    stacks = sorted(json.loads(t["metadata"]["foreach-stack"]) for t in body)
    assert stacks == [["items=a"], ["items=b"], ["items=c"]]
    assert sorted(t["index"] for t in body) == [0, 1, 2]
    [start] = failed["tasks"]["start"]
    assert start["children"] == sorted(t["pathspec"] for t in body)
    [join] = failed["tasks"]["join"]
    assert join["parents"] == sorted(t["pathspec"] for t in body)
    for task in body:
        assert task["parents"] == [start["pathspec"]]

    # The retried task: latest attempt 1, attempt 0 readable on its own.
    assert len(failed["retried"]) == 1
    assert failed["attempt0_partial"] == "first attempt"
    assert "partial" in failed["attempt0_artifacts"]
    assert failed["attempt1_attempt_seen"] == 1
    assert failed["latest_has_partial"] is False
    assert failed["values"] == ["aa", "bb", "cc"]

    resumed_id, _ = run_flow(client_env, "service_foreach_flow.py", "resume", "--origin-run-id", failed_id)
    assert resumed_id != failed_id
    resumed = read_back(client_env, "ServiceForeachFlow", resumed_id, "foreach")
    assert resumed["successful"] and resumed["finished"]
    assert resumed["checked"] is True
    assert resumed["values"] == ["aa", "bb", "cc"]
    cloned = resumed["tasks"]["body"]
    assert len(cloned) == 3
    assert {t["metadata"].get("origin-run-id") for t in cloned} == {failed_id}
