"""`up --engine official --ui official` running upstream's real code (metaflow-service v2.5.1).

The image is built from upstream's source and Debian's packages (registry/upstream_image.py,
cached between runs under ~/.cache/mfcolab-tests) and served by the Registry v2 stand-in under
its official name, so `up` pulls it the user's way: udocker, proot, the default image name.
Real flows run through the front door; then the test asks `/api` with the key for exactly what
the UI asks for (reference/metaflow-ui-contract.md Part A §3.1), opens the same pages in Chromium
(Debian's, driven by Playwright; screenshots under a folder printed at the start), and checks
that the datastore's files are byte for byte and mtime for mtime what they were before.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from ui_helpers import CHROMIUM, CHROMIUM_FLAGS, WAIT_MS

from helpers import wait_until
from mfcolab.containers.official import IMAGE
from registry.server import Registry
from stack_helpers import FLOWS, run_id_from
from test_official_stack import OfficialStack, service_pids, stack_processes

pytestmark = pytest.mark.slow

FOREACH_WIDTH = 20
LOG_LINES = 2000


def checksums(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under `folder`: (sha256, mode, mtime in ns)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            info = path.lstat()
            found[str(path.relative_to(folder))] = (hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mode,
                                                    info.st_mtime_ns)
    return found


def view_caught_up(datastore: Path, view: Path) -> bool:
    want = checksums(datastore)
    have = checksums(view)
    return all(name in have and have[name][0] == digest for name, (digest, _, _) in want.items())


class UpstreamStack(OfficialStack):
    answers: list[str]  # the body of every /api answer the test read, to look for secrets in

    def fetch(self, path: str, **params: Any) -> requests.Response:
        response = requests.get(f"{self.url}/api{path}", params=params, headers=self.headers, timeout=60)
        self.answers.append(response.text)
        return response

    def api(self, path: str, **params: Any) -> Any:
        response = self.fetch(path, **params)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return response.json() if "json" in response.headers.get("Content-Type", "") else response.text

    def data(self, path: str, **params: Any) -> Any:
        body = self.api(path, **params)
        assert body["status"] == 200, body
        return body["data"]

    def run_in(self, flow: str, cwd: Path, *args: str, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """A flow run from `cwd` (a `connect` user's working folder)."""
        result = subprocess.run([sys.executable, str(FLOWS / flow), "--no-pylint", "run", *args], check=False,
                                capture_output=True,
                                text=True, env={**self.client_env(), **(env or {})}, cwd=cwd, timeout=900)
        if check:
            assert result.returncode == 0, result.stderr[-5000:]
        return result


def run_id(result: subprocess.CompletedProcess[str]) -> str:
    return run_id_from(result.stderr + result.stdout)


def logs(stack: UpstreamStack, task: str, stream: str, **params: Any) -> list[str]:
    """One page of a task's log as the UI asks for it; waits while the backend is still loading it."""
    query = {"attempt_id": 0, "_limit": 1000, "_page": 1, "_order": "-row", **params}
    path = f"{task}/logs/{stream}"
    found: list[Any] = []

    def loaded() -> bool:
        response = stack.fetch(path, **query)
        if response.status_code != 200:
            return False
        found[:] = response.json()["data"]
        return bool(found)

    wait_until(loaded, timeout=120, interval=0.5, what=f"the {stream} log of {task}")
    return [row["line"] for row in found]


def test_upstream_code_behind_the_front_door_never_changes_the_datastore(
        tmp_path: Path, upstream_registry: Registry) -> None:
    stack = UpstreamStack(tmp_path, upstream_registry.url, image=IMAGE)
    stack.answers = []
    datastore = stack.root / "datastore"
    key_file, password_file = stack.root / "access_key", stack.root / "db_password"
    markers = [tmp_path / "unpickled-marker", datastore / "unpickled-marker"]
    try:
        first = stack.up()
        assert f"pulling {IMAGE}" in first.stderr
        containers = stack.containers()
        assert {name: c["state"] for name, c in containers.items()} == {"metadata": "running", "ui-backend": "running"}
        assert stack.get("/metadata/ping").headers["METADATA_SERVICE_VERSION"] == "2.5.1"
        # Both run as the unprivileged system user, for real (not proot's pretended uid).
        box = pwd.getpwnam("mfcolab-box").pw_uid
        for name, c in containers.items():
            assert c["user"] == "mfcolab-box"
            for pid in service_pids(stack.local / "udocker" / "containers" / c["container"]):
                assert os.stat(f"/proc/{pid}").st_uid == box, name

        # Real flows through the front door, with the `connect` profile.
        linear = run_id(stack.run_flow("linear_flow.py", "run"))
        check_just_finished(stack, linear)
        foreach = run_id(stack.run_flow("foreach_flow.py", "run", "--width", str(FOREACH_WIDTH)))
        broken_run = stack.run_flow("broken_flow.py", "run", check=False)
        assert broken_run.returncode != 0
        broken = run_id(broken_run)
        # From the datastore folder, cards land in <ds-root>/mf.cards, where the connect profile's
        # Metaflow extension puts them too (<ds-root> = <datastore>/.metaflow).
        # Its `probe` artifact, when unpickled, reads the key and the database password and writes
        # a marker outside the datastore and one in it (the UI backend sees its copy at that path).
        probe_paths = os.pathsep.join([str(key_file), f"/proc/self/root{key_file}", str(password_file)])
        probe_writes = os.pathsep.join([str(markers[0]), f"/proc/self/root{markers[0]}", str(markers[1])])
        logged = run_id(stack.run_in("log_card_flow.py", datastore,
                                     env={"PROBE_PATHS": probe_paths, "PROBE_WRITES": probe_writes}))
        assert list((datastore / ".metaflow" / "mf.cards" / "LogCardFlow").rglob("*.html")), "no card written"

        view = stack.local / "datastore-view"
        wait_until(lambda: view_caught_up(datastore, view), timeout=120, interval=0.5,
                   what="the UI backend's view of the datastore to catch up")
        before = checksums(datastore)
        assert len(before) > 100

        check_runs(stack, {"LinearFlow": linear, "ForeachFlow": foreach, "BrokenFlow": broken, "LogCardFlow": logged})
        check_foreach(stack, foreach)
        check_failed_step(stack, broken)
        task = check_logs(stack, logged)
        # After the task's logs were read, as on the task page: the hostile pickle through /api.
        check_artifacts(stack, task, markers + [stack.local / "datastore-view" / markers[1].name])
        check_cards(stack, logged, task)
        check_in_chromium(stack, {"LinearFlow": linear, "ForeachFlow": foreach, "BrokenFlow": broken,
                                  "LogCardFlow": logged}, task)

        assert checksums(datastore) == before, "the datastore changed"
        secrets = {"the access key": stack.key, "the database password": password_file.read_text().strip()}
        check_no_secret_shown(stack, secrets)

        # Upstream's backend ignores SIGTERM and runs cache workers; `down` stops them all, within
        # the stop timeout (no "did not stop within" escalation), and leaves no process.
        ui_dir = stack.local / "udocker" / "containers" / containers["ui-backend"]["container"]
        assert len(service_pids(ui_dir)) > 1
        stack.down()
        assert stack_processes(stack) == []
        assert "did not stop within" not in (stack.local / "logs" / "supervisor.log").read_text()

        upstream_registry.hits.clear()
        udocker_log = stack.local / "logs" / "udocker.log"
        commands_before = len(udocker_log.read_text().splitlines())
        second = stack.up()
        assert sum(upstream_registry.hits.values()) == 0 and "pulling" not in second.stderr
        second_commands = udocker_log.read_text().splitlines()[commands_before:]
        assert not [line for line in second_commands if " pull " in line or " create " in line], second_commands
        assert stack.data(f"/flows/LinearFlow/runs/{linear}")["status"] == "completed"
        stack.down()
        assert stack_processes(stack) == []
        assert checksums(datastore) == before
    finally:
        stack.down(check=False)
    assert stack_processes(stack) == []


def check_runs(stack: UpstreamStack, runs: dict[str, str]) -> None:
    """§3.1 #6, #7, #11, #12: the home page and a run's header."""
    listed = stack.data("/runs", _order="-ts_epoch", _limit=30, _group_limit=31, _page=1)
    statuses = {run["flow_id"]: (str(run["run_number"]), run["status"]) for run in listed}
    # Upstream calls a run without a successful `end` "running" until its last heartbeat is
    # RUN_INACTIVE_CUTOFF_TIME (6 min) old, then "failed"; its failed task is "failed" at once.
    broken = statuses.pop("BrokenFlow")
    assert broken[0] == runs.pop("BrokenFlow") and broken[1] in ("running", "failed")
    assert statuses == {flow: (run, "completed") for flow, run in runs.items()}
    run = stack.data(f"/flows/LinearFlow/runs/{runs['LinearFlow']}")
    assert run["status"] == "completed" and isinstance(run["system_tags"], list)
    assert stack.data(f"/flows/LinearFlow/runs/{runs['LinearFlow']}/parameters") == {
        "alpha": {"value": 3}, "label": {"value": "plain"}}
    assert stack.data(f"/flows/LinearFlow/runs/{runs['LinearFlow']}/metadata", step_name="start")


def check_just_finished(stack: UpstreamStack, run: str) -> None:
    """A task's artifacts asked for as soon as the run ends, before the view's next cycle may have
    copied them: the shim asks for a sync and waits, so every value shows (no cached error)."""
    base = f"/flows/LinearFlow/runs/{run}/steps/end/tasks"
    task = stack.data(base, postprocess="false")[0]["task_id"]
    artifacts = stack.data(f"{base}/{task}/artifacts", attempt_id=0, postprocess="true", _limit=50)
    assert {artifact["name"]: artifact.get("postprocess_error") for artifact in artifacts} == {
        artifact["name"]: None for artifact in artifacts}
    assert {artifact["name"]: artifact["content"] for artifact in artifacts}["alpha"] == "3"


def check_foreach(stack: UpstreamStack, run: str) -> None:
    """§3.1 #8, #9, #10: the timeline and the DAG of a foreach of 20."""
    base = f"/flows/ForeachFlow/runs/{run}"
    steps = stack.data(f"{base}/steps", _order="+ts_epoch", _limit=1000)
    shown = [step["step_name"] for step in steps if not step["step_name"].startswith("_")]  # the UI hides _parameters
    assert shown == ["start", "square", "join", "end"]
    tasks = stack.data(f"{base}/tasks", _order="+ts_epoch", _limit=1000, postprocess="false")
    by_step: dict[str, list[str]] = {}
    for task in tasks:
        if not task["step_name"].startswith("_"):
            by_step.setdefault(task["step_name"], []).append(task["status"])
    assert by_step == {"start": ["completed"], "square": ["completed"] * FOREACH_WIDTH, "join": ["completed"],
                       "end": ["completed"]}

    dag: dict[str, Any] = {}

    def dag_ready() -> bool:
        dag.update(stack.api(f"{base}/dag"))
        return bool(dag.get("data"))

    wait_until(dag_ready, timeout=120, interval=0.5, what="the DAG")
    graph = dag["data"]["steps"]
    assert graph["start"]["type"] == "split-foreach" and graph["start"]["next"] == ["square"]
    assert graph["join"]["type"] == "join"


def check_failed_step(stack: UpstreamStack, run: str) -> None:
    tasks = stack.data(f"/flows/BrokenFlow/runs/{run}/tasks", _order="+ts_epoch", _limit=1000, postprocess="false")
    failed = [task for task in tasks if task["step_name"] == "fail"]
    assert failed and failed[-1]["status"] == "failed"
    task = f"/flows/BrokenFlow/runs/{run}/steps/fail/tasks/{failed[-1]['task_id']}"
    assert any("this step fails on purpose" in line for line in logs(stack, task, "err", _order="+row"))
    assert "about to fail" in logs(stack, task, "out")


def check_logs(stack: UpstreamStack, run: str) -> str:
    """§3.1 #16, #16b: first and last pages both ways, stderr, the download; twice, the same."""
    tasks = stack.data(f"/flows/LogCardFlow/runs/{run}/tasks", _order="+ts_epoch", _limit=1000, postprocess="false")
    start = next(task for task in tasks if task["step_name"] == "start")
    task = f"/flows/LogCardFlow/runs/{run}/steps/start/tasks/{start['task_id']}"
    expected = [f"out line {number:04d}" for number in range(LOG_LINES)]
    for attempt in range(2):
        newest = logs(stack, task, "out")
        assert newest == expected[::-1][:1000], f"read {attempt + 1}"
        assert logs(stack, task, "out", _page=2) == expected[::-1][1000:]
        assert logs(stack, task, "out", _order="+row") == expected[:1000]
        assert logs(stack, task, "out", _order="+row", _page=2) == expected[1000:]
        assert logs(stack, task, "err", _order="+row") == [f"err line {number}" for number in range(5)]
        download = requests.get(f"{stack.url}/api{task}/logs/out/download", params={"attempt_id": 0},
                                headers=stack.headers, timeout=60)
        assert download.status_code == 200 and download.text.splitlines() == expected
    return task


def check_artifacts(stack: UpstreamStack, task: str, markers: list[Path]) -> None:
    """§3.1 #13, #17: the run's and the task's artifacts, values included, as the task page asks.

    The `probe` artifact runs code when unpickled: upstream's backend unpickles it to show its
    value, in its container, as `mfcolab-box`. It reads no secret and writes nothing outside its container.
    """
    run = task.rsplit("/steps/", 1)[0]
    assert stack.data(f"{run}/artifacts", ds_type="local", _limit=1)
    artifacts = {artifact["name"]: artifact
                 for artifact in stack.data(f"{task}/artifacts", attempt_id=0, postprocess="true", _limit=50)}
    assert artifacts["name"].get("content") == "LogCardFlow", artifacts["name"]
    probe = artifacts["probe"]
    assert "postprocess_error" not in probe, probe["postprocess_error"]
    outcome = probe["content"].split(" | ")
    reads, writes = outcome[:3], outcome[3:]
    assert [item.split(":")[0] for item in reads] == ["refused"] * 3, outcome
    # A write can only land in the container's own files (udocker made the datastore's parent
    # folders there to bind the view), never on this machine.
    container_root = stack.local / "udocker" / "containers" / stack.containers()["ui-backend"]["container"] / "ROOT"
    for item in writes:
        kind, _, path = item.partition(":")
        assert kind == "refused-write" or (kind == "wrote" and (container_root / path.lstrip("/")).is_file()), item
    for marker in markers:
        assert not marker.exists(), f"the unpickled artifact wrote {marker}"


def check_cards(stack: UpstreamStack, run: str, task: str) -> None:
    """§3.1 #18, #18b: the card list, then the card's HTML."""
    cards: list[dict[str, Any]] = []

    def listed() -> bool:
        body = stack.api(f"{task}/cards", invalidate="true")
        cards[:] = body.get("data") or [] if body.get("status") == 200 else []
        return bool(cards)

    wait_until(listed, timeout=120, interval=0.5, what="the card list")
    assert [card["type"] for card in cards] == ["blank"]
    html: list[str] = []

    def rendered() -> bool:
        response = requests.get(f"{stack.url}/api{task}/cards/{cards[0]['hash']}", params={"embed": "true"},
                                headers=stack.headers, timeout=60)
        html[:] = [response.text] if response.status_code == 200 else []
        return bool(html)

    wait_until(rendered, timeout=120, interval=0.5, what="the card HTML")
    assert "card-marker-5e2a" in html[0] or "card-marker-5e2a" in _decoded(html[0])


def _decoded(page: str) -> str:
    """Blank cards carry their content base64-encoded in the page."""
    import base64
    import re

    found = []
    for blob in re.findall(r"[A-Za-z0-9+/=]{40,}", page):
        try:
            found.append(base64.b64decode(blob).decode(errors="ignore"))
        except ValueError:
            continue
    return " ".join(found)


def check_in_chromium(stack: UpstreamStack, runs: dict[str, str], task: str) -> None:
    """The official UI in Debian's Chromium: sign in, the home page lists the runs, a run's DAG,
    the task page with its log lines. A screenshot of each page."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup --test installs it)")
    shots = stack.tmp / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots of the official UI: {shots}")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            def shot(name: str) -> None:
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

            def see(text: str, exact: bool = False) -> None:
                page.get_by_text(text, exact=exact).first.wait_for(state="visible", timeout=WAIT_MS)

            page.goto(stack.url + "/login", wait_until="domcontentloaded")
            shot("01-login")
            page.fill("input[name=key]", stack.key)
            page.click("button[type=submit]")
            page.wait_for_url(stack.url + "/", timeout=WAIT_MS)
            assert page.evaluate("window.METAFLOW_SERVICE") == "/api"

            for flow, run in runs.items():
                row = page.locator("tbody tr").filter(has_text=flow).filter(
                    has=page.locator("td", has_text=re.compile(rf"^\s*{run}\s*$")))
                row.first.wait_for(timeout=WAIT_MS)
            shot("02-home")

            page.goto(f"{stack.url}/ForeachFlow/{runs['ForeachFlow']}/view/dag", wait_until="domcontentloaded")
            for step in ("start", "square", "join", "end"):
                see(step, exact=True)
            shot("03-run-dag")

            flow, number, step, task_id = task.removeprefix("/flows/").split("/")[::2]
            assert (flow, number, step) == ("LogCardFlow", runs["LogCardFlow"], "start")
            page.goto(f"{stack.url}/{flow}/{number}/{step}/{task_id}", wait_until="domcontentloaded")
            see(f"out line {LOG_LINES - 1:04d}")  # the log opens at its end
            see("err line 4")
            shot("04-task-log")
        finally:
            chromium.close()
    assert errors == []


def check_no_secret_shown(stack: UpstreamStack, secrets: dict[str, str]) -> None:
    """Neither secret in any /api answer the test read, nor in any log of the stack."""
    logs = {str(path): path.read_text(errors="replace") for path in (stack.local / "logs").rglob("*") if path.is_file()}
    assert logs and stack.answers
    for what, secret in secrets.items():
        assert len(secret) >= 16, what
        assert not [answer[:200] for answer in stack.answers if secret in answer], f"{what} in an /api answer"
        assert not [name for name, text in logs.items() if secret in text], f"{what} in a log"
