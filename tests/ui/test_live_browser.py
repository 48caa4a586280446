"""The UI updating live in a real browser (Debian's Chromium, Playwright) against `mfcolab up`:
a run started while the home page is open appears and ends completed without a reload; a run
whose runtime is killed turns failed without a reload."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ui_helpers import CHROMIUM, CHROMIUM_FLAGS

from helpers import free_port, wait_until
from stack_helpers import FLOWS, Stack
from ui_release import RELEASE_PATH, ReleaseServer

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow

WAIT_MS = 180_000  # bound for a live change to show on this busy machine


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, upstream_ui_zip: Path) -> Iterator[Stack]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup --test installs it)")
    release = ReleaseServer()
    release.files[RELEASE_PATH] = upstream_ui_zip.read_bytes()
    stack = Stack(tmp_path_factory.mktemp("live-browser"), free_port(), free_port())
    try:
        stack.up("--ui-bundle", release.release_url)
        yield stack
    finally:
        stack.down(check=False)
        release.close()


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(stack.url + "/login", wait_until="domcontentloaded")
            page.fill("input[name=key]", stack.key)
            page.click("button[type=submit]")
            page.wait_for_url(stack.url + "/", timeout=WAIT_MS)
            yield page
        finally:
            chromium.close()


class GatedRun:
    """GatedFlow through the stack, in its own process group, waiting in `hold` for its gate."""

    def __init__(self, stack: Stack, gate: Path) -> None:
        self.stack = stack
        self.gate = gate
        self.proc = subprocess.Popen(
            [sys.executable, str(FLOWS / "gated_flow.py"), "--no-pylint", "run"], cwd=stack.tmp,
            env={**stack.client_env(), "GATED_FLOW_GATE": str(gate)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)

    def hold_running(self, run_number: int) -> bool:
        tasks = api(self.stack, f"/flows/GatedFlow/runs/{run_number}/steps/hold/tasks")
        return bool(tasks) and tasks[0]["status"] == "running"

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def api(stack: Stack, path: str) -> Any:
    resp = requests.get(stack.url + "/api" + path, headers={"x-api-key": stack.key}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def newest_run(stack: Stack, known: set[int]) -> int | None:
    runs = api(stack, "/flows/GatedFlow/runs?_order=-ts_epoch&_limit=5")
    fresh = [r["run_number"] for r in runs if r["run_number"] not in known]
    return fresh[0] if fresh else None


def run_row(page: Any, run_number: int) -> Any:
    return page.locator("tbody tr").filter(has_text="GatedFlow").filter(
        has=page.locator("td", has_text=re.compile(rf"^\s*{run_number}\s*$"))).first


def status_shown(page: Any, run_number: int, status: str) -> None:
    run_row(page, run_number).filter(has_text=re.compile(rf"{status} run", re.IGNORECASE)).wait_for(timeout=WAIT_MS)


def known_runs(stack: Stack) -> set[int]:
    return {r["run_number"] for r in api(stack, "/flows/GatedFlow/runs?_limit=1000")}


def start_on_an_open_home_page(stack: Stack, page: Any, tmp_path: Path) -> tuple[GatedRun, int]:
    known = known_runs(stack)
    page.goto(stack.url + "/", wait_until="networkidle")  # the list loaded and subscribed
    run = GatedRun(stack, tmp_path / "gate")
    wait_until(lambda: newest_run(stack, known) is not None, timeout=300, interval=1, what="the run to be created")
    run_number = newest_run(stack, known)
    assert run_number is not None
    return run, run_number


def test_a_run_appears_on_the_open_home_page_and_ends_completed(stack: Stack, page: Any, tmp_path: Path) -> None:
    run, run_number = start_on_an_open_home_page(stack, page, tmp_path)
    try:
        url = page.url
        run_row(page, run_number).wait_for(timeout=WAIT_MS)  # no reload: the socket brought it
        status_shown(page, run_number, "running")
        run.gate.touch()
        status_shown(page, run_number, "completed")
        assert page.url == url
        assert run.proc.wait(600) == 0
    finally:
        if run.proc.poll() is None:
            run.kill()


def test_a_killed_run_turns_failed_on_the_open_home_page(stack: Stack, page: Any, tmp_path: Path) -> None:
    run, run_number = start_on_an_open_home_page(stack, page, tmp_path)
    try:
        run_row(page, run_number).wait_for(timeout=WAIT_MS)
        wait_until(lambda: run.hold_running(run_number), timeout=300, interval=1, what="hold to run")
        status_shown(page, run_number, "running")
        run.kill()
        status_shown(page, run_number, "failed")
        assert api(stack, f"/flows/GatedFlow/runs/{run_number}")["status"] == "failed"
    finally:
        if run.proc.poll() is None:
            run.kill()


PRINTING_FLOW = Path(__file__).resolve().parent / "flows" / "printing_flow.py"
_TALK_LINE = re.compile(r"line (\d+) from talk")


def newest_printed_line(page: Any) -> int:
    """The highest `line N from talk` the open task page shows (-1 for none)."""
    texts = page.locator("[data-testid=log-line]").all_inner_texts()
    numbers = [int(m.group(1)) for text in texts for m in _TALK_LINE.finditer(text)]
    return max(numbers, default=-1)


def start_flow(stack: Stack, flow: Path, gate_variable: str, gate: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(flow), "--no-pylint", "run"], cwd=stack.tmp,
        env={**stack.client_env(), gate_variable: str(gate)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)


def running_task(stack: Stack, flow: str, step: str) -> tuple[int, int]:
    """(run number, task id) of the newest run's task of `step`, once it runs."""
    found: list[tuple[int, int]] = []

    def running() -> bool:
        runs = api(stack, f"/flows/{flow}/runs?_order=-ts_epoch&_limit=1")
        if runs:
            tasks = api(stack, f"/flows/{flow}/runs/{runs[0]['run_number']}/steps/{step}/tasks")
            if tasks and tasks[0]["status"] == "running":
                found.append((runs[0]["run_number"], tasks[0]["task_id"]))
        return bool(found)

    wait_until(running, timeout=300, interval=1, what=f"{flow}'s {step} to run")
    return found[-1]


def end_flow(proc: subprocess.Popen[bytes], gate: Path) -> None:
    gate.touch()
    try:
        proc.wait(300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def a_running_tasks_page_moves_on(stack: Stack, page: Any, flow_file: Path, gate_variable: str, tmp_path: Path,
                                  step: str, shown: Any, what: str) -> None:
    """Open the task page of `step` while it runs; the number `shown(page)` reads there (-1 for
    none yet) grows by three without a reload, before the task ends."""
    gate = tmp_path / "gate"
    proc = start_flow(stack, flow_file, gate_variable, gate)
    try:
        flow = flow_file.read_text().split("class ", 1)[1].split("(", 1)[0]
        run_number, task_id = running_task(stack, flow, step)
        page.goto(f"{stack.url}/{flow}/{run_number}/{step}/{task_id}", wait_until="domcontentloaded")
        page.evaluate("window.__notReloaded = true")
        first: list[int] = []
        wait_until(lambda: first.append(shown(page)) or first[-1] >= 0, timeout=WAIT_MS / 1000, interval=0.5,
                   what=f"the first {what} on the task page")
        wait_until(lambda: shown(page) >= first[-1] + 3, timeout=WAIT_MS / 1000, interval=0.5,
                   what=f"newer {what} on the open task page")
        assert page.evaluate("window.__notReloaded === true")
        assert proc.poll() is None, f"{step} ended before its {what} were seen moving on"
    finally:
        end_flow(proc, gate)


def test_a_running_tasks_lines_arrive_on_its_open_task_page(stack: Stack, page: Any, tmp_path: Path) -> None:
    a_running_tasks_page_moves_on(stack, page, PRINTING_FLOW, "PRINTING_FLOW_GATE", tmp_path, "talk",
                                  newest_printed_line, "printed lines")


LIVE_CARD_FLOW = Path(__file__).resolve().parent / "flows" / "live_card_flow.py"
_PROGRESS = re.compile(r"progress (\d+)")


def card_progress(page: Any) -> int:
    """The counter the card on the open task page shows (-1 before it shows one)."""
    for frame in page.frames:
        try:
            match = _PROGRESS.search(frame.inner_text("body", timeout=1000))
        except Exception:  # noqa: BLE001 - a frame that is being replaced
            continue
        if match:
            return int(match.group(1))
    return -1


def test_a_runtime_card_refreshes_in_place_on_its_open_task_page(stack: Stack, page: Any, tmp_path: Path) -> None:
    a_running_tasks_page_moves_on(stack, page, LIVE_CARD_FLOW, "LIVE_CARD_FLOW_GATE", tmp_path, "work",
                                  card_progress, "card counts")


def test_search_on_the_run_page_finds_the_foreach_tasks_by_an_artifact_value(stack: Stack, page: Any) -> None:
    stack.run_flow("foreach_flow.py", "run", "--width", "5")
    run_number = api(stack, "/flows/ForeachFlow/runs?_order=-ts_epoch&_limit=1")[0]["run_number"]
    rows = api(stack, f"/flows/ForeachFlow/runs/{run_number}/artifacts?postprocess=true&name=result&_limit=100")
    results = {str(row["task_id"]): int(row["content"]) for row in rows if row["step_name"] == "square"}
    frames: list[str] = []

    def watch(socket: Any) -> None:
        if "/api/search/" in socket.url:
            socket.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", watch)
    try:
        page.goto(f"{stack.url}/ForeachFlow/{run_number}", wait_until="networkidle")
        field = page.locator("[data-testid=filter-input-field]")
        field.fill("result:16")
        field.press("Enter")
        # Playwright hands over socket frames only while it is called: wait in the page.
        wait_until(lambda: page.wait_for_timeout(500) or any('"result"' in frame for frame in frames),
                   timeout=WAIT_MS / 1000, what="the search's result on the run page")
    finally:
        page.remove_listener("websocket", watch)
    result = next(json.loads(frame)["event"] for frame in frames if '"result"' in frame)
    assert {match["task_id"] for match in result["matches"]} == {t for t, value in results.items() if value == 16}
    # The timeline now counts one visible task of square's five.
    page.get_by_text("(1/5)").first.wait_for(timeout=WAIT_MS)
