"""Runs, steps and tasks of real flows through the UI API: envelope, filters, statuses, times."""

from __future__ import annotations

from typing import Any

from ui_helpers import Api, Runs, wait_for_status


def _by_run(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["run"]: row for row in rows}


def test_the_home_list_shows_every_run_with_its_status_and_user(api: Api, runs: Runs) -> None:
    wait_for_status(api, "FailingFlow", runs.failed, "failed")
    doc = api.ok("/runs", _order="-ts_epoch", _limit="30", _group_limit="31", _page="1")
    assert doc["status"] == 200 and doc["pages"]["self"] == 1
    assert doc["links"]["next"] is None and doc["pages"]["next"] is None
    rows = _by_run(doc["data"])
    expected = {runs.linear: "completed", runs.branch: "completed", runs.foreach: "completed",
                runs.retry: "completed", runs.failed: "failed", runs.card: "completed", runs.chatty: "completed"}
    for run, status in expected.items():
        assert rows[run]["status"] == status, rows[run]
        assert rows[run]["user"] == "tester" and rows[run]["user_name"] == "tester"
        assert rows[run]["finished_at"] >= rows[run]["ts_epoch"]
        assert rows[run]["duration"] == rows[run]["finished_at"] - rows[run]["ts_epoch"]
        assert isinstance(rows[run]["system_tags"], list) and isinstance(rows[run]["tags"], list)
    stamps = [row["ts_epoch"] for row in doc["data"]]
    assert stamps == sorted(stamps, reverse=True)


def test_a_failed_run_is_failed_as_soon_as_its_heartbeat_stops(api: Api, runs: Runs) -> None:
    run = wait_for_status(api, "FailingFlow", runs.failed, "failed")
    assert run["duration"] >= 0 and run["finished_at"] is not None
    tasks = api.data(f"/flows/FailingFlow/runs/{runs.failed}/tasks", _order="+ts_epoch", _limit="1000")
    boom = [t for t in tasks if t["step_name"] == "boom"]
    assert [t["status"] for t in boom] == ["failed"]
    assert boom[0]["finished_at"] >= boom[0]["started_at"] and boom[0]["duration"] >= 0


def test_filters_tags_and_order(api: Api, runs: Runs) -> None:
    tagged = api.data("/runs", _tags="ui-tag,project:uitest")
    assert [row["run"] for row in tagged] == [runs.linear]
    assert api.data("/runs", _tags="ui-tag,not-there") == []
    failed = api.data("/runs", status="failed", _limit="100")
    assert runs.failed in {row["run"] for row in failed}
    assert all(row["status"] == "failed" for row in failed)
    both = api.data("/runs", flow_id="LinearFlow,BranchFlow", _limit="100")
    assert {row["flow_id"] for row in both} == {"LinearFlow", "BranchFlow"}
    nobody = api.data("/runs", user="null")
    assert nobody == []
    by_flow = api.data("/runs", _order="+flow_id,ts_epoch", _limit="100")
    flows = [row["flow_id"] for row in by_flow]
    assert flows == sorted(flows)
    contains = api.data("/runs", **{"flow_id:co": "inear"})
    assert {row["flow_id"] for row in contains} == {"LinearFlow"}
    since = api.data("/runs", **{"ts_epoch:ge": str(tagged[0]["ts_epoch"])}, _limit="100")
    assert runs.linear in {row["run"] for row in since}


def test_pages_end_with_a_null_next_link(api: Api, runs: Runs) -> None:
    first = api.ok("/runs", _limit="2", _page="1")
    assert len(first["data"]) == 2 and first["pages"]["next"] == 2
    assert first["links"]["next"].startswith("/api/runs?") and "_page=2" in first["links"]["next"]
    seen = [row["run"] for row in first["data"]]
    link = first["links"]["next"]
    for _ in range(50):
        page = api.http.get(api.base.removesuffix("/api") + link, timeout=60).json()
        seen += [row["run"] for row in page["data"]]
        if page["links"]["next"] is None:
            break
        link = page["links"]["next"]
    assert page["links"]["next"] is None and page["pages"]["next"] is None
    everything = api.data("/runs", _limit="1000")
    assert seen == [row["run"] for row in everything]


def test_groups_page_over_groups(api: Api, runs: Runs) -> None:
    doc = api.ok("/runs", _group="flow_id", _group_limit="1", _limit="3", _order="-ts_epoch")
    flows = [row["flow_id"] for row in doc["data"]]
    assert len(flows) == 3 and len(set(flows)) == 3 and flows == sorted(flows)
    rest = api.ok("/runs", _group="flow_id", _group_limit="1", _limit="3", _page="2")
    assert not set(flows) & {row["flow_id"] for row in rest["data"]}


def test_one_run_by_number_and_a_missing_one(api: Api, runs: Runs) -> None:
    run = api.data(f"/flows/LinearFlow/runs/{runs.linear}")
    assert run["status"] == "completed" and run["run"] == runs.linear
    assert run["flow_id"] == "LinearFlow" and "ui-tag" in run["tags"]
    missing = api.get("/flows/LinearFlow/runs/999999")
    assert missing.status_code == 404 and missing.json()["data"] == {}
    assert api.data(f"/flows/LinearFlow/runs/{run['run_number']}")["run"] == runs.linear


def test_a_retried_task_has_one_row_per_attempt(api: Api, runs: Runs) -> None:
    tasks = api.data(f"/flows/RetryCatchFlow/runs/{runs.retry}/tasks", _order="+ts_epoch", _limit="1000",
                     postprocess="false")
    flaky = sorted((t for t in tasks if t["step_name"] == "flaky"), key=lambda t: t["attempt_id"])
    assert [(t["attempt_id"], t["status"]) for t in flaky] == [(0, "failed"), (1, "completed")]
    assert flaky[0]["task_id"] == flaky[1]["task_id"]
    assert flaky[0]["finished_at"] <= flaky[1]["started_at"]
    caught = [t for t in tasks if t["step_name"] == "fragile"]
    assert [t["status"] for t in caught] == ["completed"]
    for task in tasks:
        assert task["duration"] >= 0 and task["finished_at"] >= task["started_at"], task
    attempts = api.data(f"/flows/RetryCatchFlow/runs/{runs.retry}/steps/flaky/tasks/{flaky[0]['task_id']}/attempts",
                        postprocess="true")
    assert sorted(a["attempt_id"] for a in attempts) == [0, 1]


def test_steps_and_a_foreach(api: Api, runs: Runs) -> None:
    steps = api.data(f"/flows/ForeachFlow/runs/{runs.foreach}/steps", _order="+ts_epoch", _limit="1000")
    names = [s["step_name"] for s in steps]
    assert {"start", "square", "join", "end"} <= set(names)
    assert all(s["duration"] >= 0 for s in steps)
    tasks = api.data(f"/flows/ForeachFlow/runs/{runs.foreach}/tasks", _limit="1000")
    assert len([t for t in tasks if t["step_name"] == "square"]) == 5
    assert all(t["status"] == "completed" for t in tasks)
    one_step = api.data(f"/flows/ForeachFlow/runs/{runs.foreach}/steps/square/tasks")
    assert len(one_step) == 5


def test_metadata_of_a_run_and_a_task(api: Api, runs: Runs) -> None:
    base = f"/flows/LinearFlow/runs/{runs.linear}"
    start = api.data(base + "/metadata", step_name="start", _limit="1000")
    assert start and {m["step_name"] for m in start} == {"start"}
    task_id = start[0]["task_id"]
    latest = api.data(f"{base}/steps/start/tasks/{task_id}/metadata", _limit="100", attempt_id="0")
    fields = {m["field_name"] for m in latest}
    assert {"attempt", "attempt_ok", "ds-root"} <= fields
    assert all(m["attempt_id"] == 0 for m in latest)
    untagged = api.data(f"{base}/steps/start/tasks/{task_id}/metadata", _limit="100", **{"attempt_id:is": "null"})
    assert all(m["attempt_id"] is None for m in untagged)
