"""What the UI API reads from the datastore: parameters, the DAG, artifact values, logs and
cards, read in place (the datastore checksum is compared after every test of the session), a
hostile value kept from the key and from writing, and a ds-root recorded elsewhere."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ui_helpers import Api, Runs, Stack, build_stack

from mfcolab.settings import Settings


def card_text(html: str) -> str:
    """The card's own data: a default-template card embeds it as base64 JSON in the page."""
    import base64
    import re

    return " ".join(base64.b64decode(blob).decode() for blob in re.findall(r'__MF_DATA__\["[^"]+"\] = "([^"]+)"', html))


def _task(api: Api, flow: str, run: str, step: str) -> dict[str, Any]:
    [task] = [t for t in api.data(f"/flows/{flow}/runs/{run}/tasks", _limit="1000") if t["step_name"] == step]
    return task


def test_parameters_show_each_value_as_text(api: Api, runs: Runs) -> None:
    params = api.data(f"/flows/LinearFlow/runs/{runs.linear}/parameters")
    assert params == {"alpha": {"value": "4"}, "label": {"value": "hi"}}


def test_the_dag_is_the_runs_graph_info(api: Api, runs: Runs) -> None:
    dag = api.data(f"/flows/BranchFlow/runs/{runs.branch}/dag")
    assert set(dag["steps"]) == {"start", "left", "right", "join", "end"}
    assert dag["steps"]["start"]["type"] == "split-static"
    assert dag["steps"]["start"]["next"] == ["left", "right"]
    assert dag["graph_structure"][0] == "start" and dag["graph_structure"][-1] == "end"
    card_dag = api.data(f"/flows/UiCardFlow/runs/{runs.card}/dag")
    assert any(d["name"] == "card" for d in card_dag["steps"]["start"]["decorators"])
    assert api.get("/flows/BranchFlow/runs/999999/dag").status_code == 404


def test_artifact_values_and_the_size_cap(api: Api, runs: Runs) -> None:
    task = _task(api, "ChattyFlow", runs.chatty, "start")
    path = f"/flows/ChattyFlow/runs/{runs.chatty}/steps/start/tasks/{task['task_id']}/artifacts"
    rows = {a["name"]: a for a in api.data(path, attempt_id="0", postprocess="true", _limit="50")}
    assert rows["small"]["content"] == "{'answer': 42, 'words': ['a', 'b']}"
    assert rows["big"]["postprocess_error"]["id"] == "artifact-too-large"
    assert "content" not in rows["big"]
    plain = {a["name"]: a for a in api.data(path, attempt_id="0", _limit="50")}
    assert "content" not in plain["small"] and plain["small"]["ds_type"] == "local"
    local = api.data(f"/flows/ChattyFlow/runs/{runs.chatty}/artifacts", ds_type="local", _limit="1")
    assert len(local) == 1


def test_a_hostile_value_gets_an_error_and_reads_and_writes_nothing(api: Api, runs: Runs, stack: Stack) -> None:
    task = _task(api, "HostileFlow", runs.hostile, "start")
    path = f"/flows/HostileFlow/runs/{runs.hostile}/steps/start/tasks/{task['task_id']}/artifacts"
    rows = {a["name"]: a for a in api.data(path, postprocess="true", _limit="50")}
    assert rows["hostile"]["postprocess_error"]["id"] == "artifact-handle-failed"
    assert rows["writer"]["postprocess_error"]["id"] == "artifact-handle-failed"
    assert rows["plain"]["content"] == "a plain value"
    assert not runs.outside.exists(), "the hostile value wrote the key out"
    assert not runs.tmp_target.exists(), "the hostile value wrote a file outside the datastore"
    assert stack.settings.key_file.exists()


def test_logs_page_by_absolute_rows(api: Api, runs: Runs) -> None:
    task = _task(api, "ChattyFlow", runs.chatty, "start")
    base = f"/flows/ChattyFlow/runs/{runs.chatty}/steps/start/tasks/{task['task_id']}/logs"
    last = api.ok(base + "/out", attempt_id="0", _limit="1000", _page="1", _order="-row")
    rows = [line["row"] for line in last["data"]]
    total = last["pages"]["last"]
    assert rows == sorted(rows, reverse=True) and rows[0] - rows[-1] == len(rows) - 1
    texts = [line["line"] for line in last["data"]]
    assert "stdout line 4999" in texts
    first = api.ok(base + "/out", attempt_id="0", _limit="1000", _page="1", _order="+row")
    assert [line["row"] for line in first["data"]] == list(range(1000))
    assert "stdout line 0" in [line["line"] for line in first["data"]]
    assert all(isinstance(line["timestamp"], int) for line in first["data"])
    stamps = [line["timestamp"] for line in first["data"]]
    assert stamps == sorted(stamps)
    everything = []
    for page in range(1, total + 1):
        everything += api.data(base + "/out", attempt_id="0", _limit="1000", _page=str(page), _order="+row")
    assert [line["row"] for line in everything] == list(range(len(everything)))
    assert rows[0] == len(everything) - 1
    numbered = [line["line"] for line in everything if line["line"].startswith("stdout line ")]
    assert numbered == [f"stdout line {n}" for n in range(5000)]
    errors = [line["line"] for line in api.data(base + "/err", attempt_id="0", _limit="1000")]
    assert {"stderr line 0", "stderr line 1", "stderr line 2"} <= set(errors)
    download = api.get(base + "/out/download", attempt_id="0")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    assert download.text.splitlines() == [line["line"] for line in everything]


def test_latest_attempt_logs_by_default(api: Api, runs: Runs) -> None:
    [flaky] = list({t["task_id"] for t in api.data(f"/flows/RetryCatchFlow/runs/{runs.retry}/tasks", _limit="1000")
                    if t["step_name"] == "flaky"})
    base = f"/flows/RetryCatchFlow/runs/{runs.retry}/steps/flaky/tasks/{flaky}/logs/err"
    first = "\n".join(line["line"] for line in api.data(base, attempt_id="0", _limit="1000"))
    assert "first attempt fails on purpose" in first
    latest = "\n".join(line["line"] for line in api.data(base, _limit="1000"))
    assert "first attempt fails on purpose" not in latest


def test_cards_list_html_and_missing_data(api: Api, runs: Runs) -> None:
    task = _task(api, "UiCardFlow", runs.card, "start")
    base = f"/flows/UiCardFlow/runs/{runs.card}/steps/start/tasks/{task['task_id']}/cards"
    doc = api.ok(base)
    assert doc["status"] == 200 and doc["links"]["next"] is None
    [card] = doc["data"]
    assert card["type"] == "blank" and card["hash"]
    html = api.get(f"{base}/{card['hash']}", embed="true", invalidate="true")
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    assert "Card heading from UiCardFlow" in card_text(html.text)
    assert api.get(f"{base}/not-a-hash").status_code == 404
    assert api.get(f"{base}/{card['hash']}/data").status_code in (200, 404)
    plain = _task(api, "LinearFlow", runs.linear, "start")
    none = api.ok(f"/flows/LinearFlow/runs/{runs.linear}/steps/start/tasks/{plain['task_id']}/cards")
    assert none["data"] == [] and none["status"] == 200


@pytest.fixture()
def moved_copy(stack: Stack, pg_dsn: str, tmp_path: Path) -> Iterator[Api]:
    """The same database with the datastore seen at another path: a copy under a new root."""
    settings = Settings.resolve(root=tmp_path / "elsewhere" / "root", local=tmp_path / "local", tunnel=False)
    shutil.copytree(stack.settings.datastore_dir, settings.datastore_dir, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if n.startswith("ChattyFlow") and "data" in folder])
    server = build_stack(settings, pg_dsn)
    with requests.Session() as http:
        yield Api(http, server.url + "/api")
    server.stop()


def test_a_ds_root_recorded_elsewhere_maps_onto_this_root(api: Api, runs: Runs, moved_copy: Api) -> None:
    task = _task(api, "UiCardFlow", runs.card, "start")
    base = f"/flows/UiCardFlow/runs/{runs.card}/steps/start/tasks/{task['task_id']}"
    [card] = moved_copy.data(base + "/cards")
    assert "Card heading from UiCardFlow" in card_text(moved_copy.get(f"{base}/cards/{card['hash']}").text)
    lines = [line["line"] for line in moved_copy.data(f"/flows/LinearFlow/runs/{runs.linear}/steps/start/tasks/"
                                                      f"{_task(api, 'LinearFlow', runs.linear, 'start')['task_id']}"
                                                      "/logs/out", _limit="1000")]
    assert lines == [line["line"] for line in api.data(f"/flows/LinearFlow/runs/{runs.linear}/steps/start/tasks/"
                                                       f"{_task(api, 'LinearFlow', runs.linear, 'start')['task_id']}"
                                                       "/logs/out", _limit="1000")]
    assert moved_copy.data(f"/flows/LinearFlow/runs/{runs.linear}/parameters") == {
        "alpha": {"value": "4"}, "label": {"value": "hi"}}


def test_a_symlink_out_of_the_datastore_is_not_followed(stack: Stack) -> None:
    from mfcolab.ui.datastore import DatastoreRoots

    roots = DatastoreRoots(stack.settings.datastore_dir)
    outside_link = stack.settings.root / "link-probe"
    assert roots.read(stack.settings.key_file, 4096) is None
    assert roots.local_root(str(stack.settings.root)) == stack.settings.datastore_dir
    assert roots.local_root("/mnt/other/datastore/.metaflow") == stack.settings.datastore_dir / ".metaflow"
    assert roots.local_root("/elsewhere/.metaflow") == stack.settings.datastore_dir / ".metaflow"
    assert not outside_link.exists()
