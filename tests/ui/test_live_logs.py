"""Logs of a running task: the runtime (with mfcolab's Metaflow extension on) sends what it has
captured to the service, and the UI's log route shows it while the datastore has no log; the
datastore's log wins once it is written. Also the spool's bounds and the new routes' refusals."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ui_helpers import UI_FLOWS, Stack, client_env, tree_checksum

from helpers import wait_until
from mfcolab.service.livelogs import LogSpool, OffsetGap

pytestmark = pytest.mark.slow

WAIT = 300.0


class PrintingRun:
    """PrintingFlow in the background: `talk` prints a line every half second until its gate exists."""

    def __init__(self, env: dict[str, str], gate: Path, extension: str = "1") -> None:
        self.gate = gate
        self.proc = subprocess.Popen(
            [sys.executable, str(UI_FLOWS / "printing_flow.py"), "--no-pylint", "run"], cwd=UI_FLOWS,
            env={**env, "PRINTING_FLOW_GATE": str(gate), "METAFLOW_MFCOLAB_EXTENSION": extension},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def finish(self) -> str:
        self.gate.touch()
        output = self.proc.communicate(timeout=600)[0].decode(errors="replace")
        assert self.proc.returncode == 0, output[-4000:]
        return output


@pytest.fixture(scope="module")
def flow_env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return client_env(stack.metadata_url, stack.settings.root, tmp_path_factory.mktemp("mf-home-logs"))


@pytest.fixture()
def printing(flow_env: dict[str, str], tmp_path: Path) -> Iterator[PrintingRun]:
    run = PrintingRun(flow_env, tmp_path / "gate")
    yield run
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait(30)


def get(stack: Stack, path: str, **params: Any) -> requests.Response:
    return requests.get(stack.api_url + path, params=params, timeout=60)


def data(stack: Stack, path: str, **params: Any) -> Any:
    resp = get(stack, path, **params)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def talk_task(stack: Stack, known: set[int]) -> str | None:
    """The path of the newest PrintingFlow run's `talk` task, once it exists."""
    runs = [r for r in data(stack, "/flows/PrintingFlow/runs", _order="-ts_epoch", _limit=5) if r["run_number"] not in known]
    if not runs:
        return None
    tasks = data(stack, f"/flows/PrintingFlow/runs/{runs[0]['run_number']}/steps/talk/tasks")
    return f"/flows/PrintingFlow/runs/{runs[0]['run_number']}/steps/talk/tasks/{tasks[0]['task_id']}" if tasks else None


def known_runs(stack: Stack) -> set[int]:
    resp = get(stack, "/flows/PrintingFlow/runs", _limit=1000)
    return {r["run_number"] for r in resp.json()["data"]} if resp.status_code == 200 else set()


def talk_lines(log: list[dict[str, Any]]) -> list[str]:
    return [row["line"] for row in log if row["line"].startswith("line ")]


def test_a_running_tasks_lines_reach_the_log_route_and_the_final_log_wins(
        stack: Stack, printing: PrintingRun) -> None:
    known = known_runs(stack)
    found: list[str] = []
    wait_until(lambda: found.append(talk_task(stack, known) or "") or found[-1], timeout=WAIT, interval=0.5,
               what="the talk task")
    task = found[-1]
    folder = stack.settings.datastore_dir / ".metaflow" / "PrintingFlow" / task.split("/")[4] / "talk" / task.split("/")[-1]

    seen: list[list[dict[str, Any]]] = []

    def has_lines(count: int) -> bool:
        seen.append(data(stack, task + "/logs/out", attempt_id=0, _order="-row", _limit=1000))
        return len(talk_lines(seen[-1])) >= count

    wait_until(lambda: has_lines(3), timeout=WAIT, interval=0.5, what="the first lines while talk runs")
    early = sorted(seen[-1], key=lambda row: row["row"])
    assert printing.proc.poll() is None and not list(folder.glob("0.*_stdout.log")), "the task ended too soon"
    wait_until(lambda: has_lines(len(talk_lines(early)) + 3), timeout=WAIT, interval=0.5, what="more lines")
    later = sorted(seen[-1], key=lambda row: row["row"])
    assert not list(folder.glob("0.*_stdout.log")), "the datastore's log appeared while talk ran"
    assert later[: len(early)] == early, "a poll of a running task changed lines it had shown"
    assert [row["row"] for row in later] == list(range(len(later)))
    assert all(row["timestamp"] for row in later)
    assert talk_lines(later)[:5] == [f"line {n} from talk" for n in range(min(5, len(talk_lines(later))))]

    printing.finish()
    final = sorted(data(stack, task + "/logs/out", attempt_id=0, _order="+row", _limit=10_000),
                   key=lambda row: row["row"])
    assert list(folder.glob("0.runtime_stdout.log")), "the runtime saved no log"
    assert final[: len(later)] == later, "the final log does not continue what was shown live"
    assert "talk is done" in [row["line"] for row in final]
    stored = (folder / "0.runtime_stdout.log").read_bytes().decode()
    assert stored.count("from talk") == len(talk_lines(final))


def test_without_the_extension_a_running_task_shows_no_lines(stack: Stack, flow_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    known = known_runs(stack)
    run = PrintingRun(flow_env, tmp_path / "gate", extension="0")
    try:
        found: list[str] = []
        wait_until(lambda: found.append(talk_task(stack, known) or "") or found[-1], timeout=WAIT, interval=0.5,
                   what="the talk task")
        wait_until(lambda: data(stack, found[-1] + "/metadata"), timeout=WAIT, interval=0.5, what="talk's metadata")
        for _ in range(6):  # three seconds of polls: the stock runtime keeps the lines to itself
            assert talk_lines(data(stack, found[-1] + "/logs/out", attempt_id=0, _order="-row")) == []
            time.sleep(0.5)
        output = run.finish()
        assert "from talk" in output
        assert talk_lines(data(stack, found[-1] + "/logs/out", attempt_id=0, _order="-row"))
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(30)


# --- the routes' refusals ------------------------------------------------------------------------


def post(stack: Stack, path: str, body: bytes = b"x\n", **params: Any) -> requests.Response:
    return requests.post(stack.metadata_url + path, params=params, data=body, timeout=60)


def a_task(stack: Stack, runs: Any) -> str:
    tasks = data(stack, f"/flows/LinearFlow/runs/{runs.linear}/steps/start/tasks")
    return f"/flows/LinearFlow/runs/{runs.linear}/steps/start/tasks/{tasks[0]['task_id']}"


@pytest.mark.parametrize(("suffix", "params", "status", "words"), [
    ("/logs/stdout", {"offset": "0"}, 400, "attempt is required"),
    ("/logs/stdout", {"attempt": "x", "offset": "0"}, 400, "attempt"),
    ("/logs/stdout", {"attempt": "0"}, 400, "offset"),
    ("/logs/stdout", {"attempt": "0", "offset": "-1"}, 400, "offset"),
    ("/logs/stdout", {"attempt": "0", "offset": "1e3"}, 400, "offset"),
    ("/logs/out", {"attempt": "0", "offset": "0"}, 404, "stdout or stderr"),
    ("/logs/stdout", {"attempt": "0", "offset": "999999"}, 409, "past"),
])
def test_the_log_route_refuses_bad_input_with_a_message(stack: Stack, runs: Any, suffix: str,
                                                        params: dict[str, str], status: int, words: str) -> None:
    resp = post(stack, a_task(stack, runs) + suffix, **params)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["message"]


def test_the_log_route_refuses_a_missing_task_an_oversized_body_and_a_labelled_body(stack: Stack, runs: Any) -> None:
    resp = post(stack, f"/flows/LinearFlow/runs/{runs.linear}/steps/start/tasks/999999/logs/stdout", attempt=0, offset=0)
    assert resp.status_code == 404 and "does not exist" in resp.json()["message"]
    resp = post(stack, a_task(stack, runs) + "/logs/stdout", b"x" * (1024 * 1024 + 1), attempt=0, offset=0)
    assert resp.status_code == 413 and "at most" in resp.json()["message"]
    resp = requests.post(stack.metadata_url + a_task(stack, runs) + "/logs/stdout", params={"attempt": 0, "offset": 0},
                         data=b"x\n", headers={"Content-Type": "text/plain"}, timeout=60)
    assert resp.status_code == 415


def test_a_finished_tasks_datastore_log_wins_over_its_spooled_copy(stack: Stack, runs: Any) -> None:
    task = a_task(stack, runs)
    before = data(stack, task + "/logs/out", attempt_id=0)
    checksum = tree_checksum(stack.settings.datastore_dir)
    first = b"[MFLOG|0|2026-11-29T18:57:02.545050Z|runtime|x]spooled\n"
    resp = post(stack, task + "/logs/stdout", first, attempt=0, offset=0)
    assert resp.status_code == 200 and resp.json() == {"length": len(first)}
    resp = post(stack, task + "/logs/stdout", first[-8:] + b"more\n", attempt=0, offset=len(first) - 8)
    assert resp.json() == {"length": len(first) + 5}
    assert data(stack, task + "/logs/out", attempt_id=0) == before
    assert requests.delete(stack.metadata_url + task + "/logs/stdout", params={"attempt": 0}, timeout=60).status_code == 200
    assert tree_checksum(stack.settings.datastore_dir) == checksum


# --- the spool's bounds ---------------------------------------------------------------------------

KEY = ("F", "1", "s", "2", 0, "stdout")


def test_the_spool_keeps_rows_absolute_when_it_lets_old_lines_go() -> None:
    spool = LogSpool(log_max=100)
    sent = b"".join(b"line %03d\n" % n for n in range(50))  # 9 bytes a line
    for start in range(0, len(sent), 7):  # arbitrary pieces, cut mid-line
        spool.append(KEY, start, sent[start:start + 7])
    log = spool.get(KEY)
    assert log is not None and log.length == len(sent)
    assert log.held <= 100 and spool.held == log.held
    assert log.rows()[-1] == b"line 049" and log.rows()[0] == b"line %03d" % log.first_row
    assert log.first_row + len(log.rows()) == 50


def test_the_spool_takes_a_resent_piece_once_and_refuses_a_gap() -> None:
    spool = LogSpool()
    assert spool.append(KEY, 0, b"ab\ncd") == 5
    assert spool.append(KEY, 3, b"cd\nef\n") == 9  # "cd" again: a retried request
    log = spool.get(KEY)
    assert log is not None and log.rows() == [b"ab", b"cd", b"ef"]
    with pytest.raises(OffsetGap) as gap:
        spool.append(KEY, 12, b"x")
    assert gap.value.length == 9


def test_the_spool_lets_the_least_recently_fed_logs_go_first() -> None:
    spool = LogSpool(total_max=1000, logs_max=3)
    keys = [("F", "1", "s", str(n), 0, "stdout") for n in range(5)]
    for key in keys:
        spool.append(key, 0, b"x" * 100 + b"\n")
    assert len(spool) == 3 and [spool.get(key) is None for key in keys] == [True, True, False, False, False]
    spool.append(keys[2], 101, b"y" * 800 + b"\n")  # now over the total: the oldest others go
    assert spool.get(keys[2]) is not None and spool.held <= 1000
    spool.drop(keys[2])
    assert spool.held == sum(log.held for log in (spool.get(k) for k in keys) if log is not None)
