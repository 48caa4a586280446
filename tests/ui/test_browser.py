"""The Metaflow UI in a real browser: Debian's Chromium driven by Playwright, against a real stack
(`mfcolab up`, the UI release downloaded from a stand-in of its GitHub URL) after real flows ran
through the front door.

Each page is saved as a screenshot under a folder printed at the start (a test artifact). The
whole datastore is checksummed before the browser opens anything and again at the end: viewing
changes nothing in it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import free_port, wait_until
from stack_helpers import FLOWS, Stack, run_id_from
from ui_helpers import CHROMIUM, CHROMIUM_FLAGS, WAIT_MS
from ui_release import RELEASE_PATH, ReleaseServer

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow

LOG_LINES = 5000


@dataclass
class Runs:
    """The flows run before the browser opens, with their run ids."""

    stack: Stack
    ids: dict[str, str] = field(default_factory=dict)  # flow -> run id
    tasks: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # flow -> step -> task ids
    checksum: dict[str, str] = field(default_factory=dict)  # the datastore before the browser


def datastore_checksum(root: Path) -> dict[str, str]:
    """Every file under the datastore with its SHA-256, plus every folder (so an added empty one counts)."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        found[rel + "/"] = "folder"
        for name in files:
            path = Path(folder) / name
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            found[os.path.join(rel, name)] = digest.hexdigest()
    return found


def run_flow(stack: Stack, flow: str, *args: str, check: bool = True) -> str:
    result = stack.run_flow(flow, "run", *args, check=check)
    return run_id_from(result.stderr + result.stdout)


def run_from_the_datastore(stack: Stack, flow: str) -> str:
    """Run a flow from inside <root>/datastore, so that stock Metaflow writes its cards to the shared
    datastore's .metaflow/mf.cards (from another working folder it writes them beside that folder)."""
    result = subprocess.run([sys.executable, str(FLOWS / flow), "--no-pylint", "run"], capture_output=True, text=True,
                            env=stack.client_env(), cwd=stack.root / "datastore", timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_id_from(result.stderr + result.stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, upstream_ui_zip: Path) -> Iterator[Runs]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup --test installs it)")
    release = ReleaseServer()
    release.files[RELEASE_PATH] = upstream_ui_zip.read_bytes()
    stack = Stack(tmp_path_factory.mktemp("browser"), free_port(), free_port())
    try:
        stack.up("--ui-bundle", release.release_url)
        found = Runs(stack)
        found.ids["ResumableFlow"] = run_flow(stack, "resumable_flow.py", check=False)  # fails in `fragile`
        found.ids["LinearFlow"] = run_flow(stack, "linear_flow.py", "--alpha", "5", "--label", "browser",
                                           "--tag", "ui-check")
        found.ids["BranchFlow"] = run_flow(stack, "branch_flow.py")
        found.ids["ForeachFlow"] = run_flow(stack, "foreach_flow.py", "--width", "50")
        found.ids["RetryCatchFlow"] = run_flow(stack, "retry_catch_flow.py")
        found.ids["UiShowcaseFlow"] = run_from_the_datastore(stack, "ui_showcase_flow.py")
        found.tasks = stack.client(f"""
            result = {{}}
            for flow, run_id in {found.ids!r}.items():
                result[flow] = {{step.id: [task.id for task in step] for step in Run(f"{{flow}}/{{run_id}}")}}
        """)
        found.checksum = datastore_checksum(stack.root / "datastore")
        yield found
    finally:
        stack.down(check=False)
        release.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nscreenshots of the UI pages: {folder}")
    return folder


@dataclass
class Browser:
    page: Any
    base: str
    shots: Path
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.page.goto(self.base + path, wait_until="domcontentloaded")

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")

    def see(self, text: str, *, exact: bool = False) -> None:
        self.page.get_by_text(text, exact=exact).first.wait_for(state="visible", timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser(runs: Runs, shots: Path) -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            context = chromium.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            seen = Browser(page, runs.stack.url, shots)
            page.on("pageerror", lambda error: seen.page_errors.append(str(error)))
            page.on("console", lambda message: seen.console_errors.append(message.text)
                    if message.type == "error" else None)
            yield seen
        finally:
            chromium.close()


def test_sign_in_with_the_key(browser: Browser, runs: Runs) -> None:
    browser.open("/HelloFlow")
    assert browser.page.locator("form[action='/login']").count() == 1  # a keyless page load asks for the key
    browser.open("/login")
    browser.shot("01-login")
    browser.page.fill("input[name=key]", runs.stack.key)
    browser.page.click("button[type=submit]")
    browser.page.wait_for_url(browser.base + "/", timeout=WAIT_MS)
    assert browser.page.evaluate("window.METAFLOW_SERVICE") == "/api"


EXPECTED_STATUS = {
    "LinearFlow": "completed", "BranchFlow": "completed", "ForeachFlow": "completed",
    "RetryCatchFlow": "completed", "ResumableFlow": "failed", "UiShowcaseFlow": "completed",
}


def home_rows(browser: Browser, runs: Runs) -> dict[str, str]:
    """The text of each run's row on the home page, by flow."""
    rows = {}
    for flow, run_id in runs.ids.items():
        row = browser.page.locator("tbody tr").filter(has_text=flow).filter(
            has=browser.page.locator("td", has_text=re.compile(rf"^\s*{run_id}\s*$")))
        row.first.wait_for(timeout=WAIT_MS)
        rows[flow] = " ".join(row.first.inner_text().split())
    return rows


def test_the_home_page_lists_every_run_with_its_status_and_user(browser: Browser, runs: Runs) -> None:
    def statuses_shown() -> bool:
        # The home page does not poll: reload until a failed run's lost heartbeat has been noticed.
        browser.open("/")
        rows = home_rows(browser, runs)
        return all(f"{EXPECTED_STATUS[flow]} run" in text.lower() for flow, text in rows.items())

    wait_until(statuses_shown, timeout=300, interval=5, what="every run to show its final status")
    browser.shot("02-home")
    for flow, text in home_rows(browser, runs).items():
        assert "tester" in text.split(), (flow, text)
    assert "ui-check" in home_rows(browser, runs)["LinearFlow"]


def test_the_run_page_shows_the_dag_the_timeline_and_both_attempts(browser: Browser, runs: Runs) -> None:
    run = f"/RetryCatchFlow/{runs.ids['RetryCatchFlow']}"
    browser.open(run + "/view/dag")
    for step in ("start", "flaky", "fragile", "end"):
        browser.see(step, exact=True)
    browser.shot("03-run-dag")

    browser.open(run + "/view/timeline")
    browser.see("flaky", exact=True)
    browser.shot("04-run-timeline")

    browser.open(run + "/view/task")
    browser.see("flaky", exact=True)
    browser.shot("05-run-tasks")

    flaky = runs.tasks["RetryCatchFlow"]["flaky"][0]
    browser.open(f"{run}/flaky/{flaky}")
    browser.see("Attempt 0")
    browser.see("Attempt 1")
    browser.shot("06-retried-task")


def test_the_task_page_shows_the_log_ends_stderr_and_artifacts(browser: Browser, runs: Runs) -> None:
    chatty = runs.tasks["UiShowcaseFlow"]["chatty"][0]
    browser.open(f"/UiShowcaseFlow/{runs.ids['UiShowcaseFlow']}/chatty/{chatty}")
    browser.see(f"stdout line {LOG_LINES} of {LOG_LINES}")  # the log opens at its end
    browser.shot("07-task-log-end")
    scroll_log_to_the_top(browser, f"stdout line {LOG_LINES} of {LOG_LINES}")
    browser.see(f"stdout line 1 of {LOG_LINES}")
    browser.shot("08-task-log-top")

    browser.page.get_by_text("stderr", exact=True).last.click()
    browser.see("stderr line 3 of 3")
    browser.shot("09-task-stderr")

    browser.see("small")
    big = browser.page.locator("tr", has_text="big").first
    big.wait_for(timeout=WAIT_MS)
    assert "too large" in big.inner_text().lower(), big.inner_text()
    big.scroll_into_view_if_needed()
    browser.shot("10-task-artifacts")


def test_the_card_shows_in_its_iframe(browser: Browser, runs: Runs) -> None:
    start = runs.tasks["UiShowcaseFlow"]["start"][0]
    browser.open(f"/UiShowcaseFlow/{runs.ids['UiShowcaseFlow']}/start/{start}")
    frame = browser.page.frame_locator("iframe").first
    frame.get_by_text("Card from UiShowcaseFlow").wait_for(timeout=WAIT_MS)
    browser.page.locator("iframe").first.scroll_into_view_if_needed()
    browser.shot("11-task-card")


def test_no_uncaught_error_in_the_console(browser: Browser) -> None:
    print("console errors (not uncaught):", browser.console_errors)
    assert browser.page_errors == []


def test_viewing_changed_nothing_in_the_datastore(browser: Browser, runs: Runs) -> None:
    assert datastore_checksum(runs.stack.root / "datastore") == runs.checksum


def scroll_log_to_the_top(browser: Browser, shown_line: str) -> None:
    """The log list is virtualised (only the rows in view exist): scroll its box to the top."""
    browser.page.get_by_text(shown_line).first.evaluate("""(line) => {
        for (let box = line.parentElement; box; box = box.parentElement) {
            if (box.scrollHeight > box.clientHeight + 10 && getComputedStyle(box).overflowY !== 'visible') {
                box.scrollTop = 0;
                return;
            }
        }
    }""")
