"""The UI API against upstream's UI backend (metaflow-service 2.5.1), run natively on a copy of
the same database: the same list and detail requests, compared field by field.

Only database-derived routes are sent to the oracle: its log route moves log files out of a
local datastore on first read (contract, Part B §3.2), so it never gets a log, card, value or
DAG request here. Every difference allowed below is deliberate and listed in docs/ui.md."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from ui_helpers import Api, Runs, Stack, wait_for_status
from helpers import free_port
from oracle import UpstreamBackend, build_venv

from mfcolab.postgres import pg_binary


def _copy_database(dsn: str) -> tuple[dict[str, str], str]:
    parts = urlsplit(dsn)
    name = f"ui_oracle_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PGPASSWORD": parts.password or ""}
    common = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port), "-U", parts.username or "postgres"]
    subprocess.run([str(pg_binary("createdb")), *common, name], env=env, check=True, capture_output=True)
    dump = subprocess.run([str(pg_binary("pg_dump")), *common, "--no-owner", (parts.path or "/postgres")[1:]],
                          env=env, check=True, capture_output=True)
    subprocess.run([str(pg_binary("psql")), *common, "-q", "-v", "ON_ERROR_STOP=1", "-d", name],
                   input=dump.stdout, env=env, check=True, capture_output=True)
    return {"host": parts.hostname or "127.0.0.1", "port": str(parts.port), "user": parts.username or "postgres",
            "password": parts.password or "", "dbname": name}, name


@pytest.fixture(scope="module")
def upstream(stack: Stack, runs: Runs, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    build_venv()
    with requests.Session() as http:
        wait_for_status(Api(http, stack.api_url), "FailingFlow", runs.failed, "failed")
    parts, _name = _copy_database(pg_dsn)
    work = tmp_path_factory.mktemp("oracle")
    backend = UpstreamBackend(parts, free_port(), work / "backend.log")
    backend.start(work)
    with requests.Session() as http:
        yield Api(http, backend.url)
    backend.stop()


# Fields whose values differ on purpose (docs/ui.md, "Differences from the upstream backend").
STATUS_TIMES = {"status", "finished_at", "duration"}


def _rows(doc: Any) -> list[dict[str, Any]]:
    return doc["data"] if isinstance(doc["data"], list) else [doc["data"]]


def _compare(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: tuple[str, ...],
             deliberate: set[str]) -> list[tuple[Any, str, Any, Any]]:
    """Every (row key, field, ours, theirs) that differs outside `deliberate`."""
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    mine = {tuple(row[k] for k in key): row for row in ours}
    diffs = []
    for row in theirs:
        at = tuple(row[k] for k in key)
        assert at in mine, (at, sorted(mine))
        for field, value in row.items():
            if field in deliberate:
                continue
            assert field in mine[at], (at, field)
            if mine[at][field] != value:
                diffs.append((at, field, mine[at][field], value))
    assert not diffs, "\n".join(f"{at} {field}: ours {a!r}, upstream {b!r}" for at, field, a, b in diffs)
    return diffs


def _same_status_unless_deliberate(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Statuses agree except where upstream's quirks are fixed: a dead run that it still calls
    running, a finished task without a verdict it calls unknown."""
    if ours["status"] != theirs["status"]:
        allowed = {("failed", "running"), ("completed", "unknown")}
        assert (ours["status"], theirs["status"]) in allowed, (ours, theirs)
    assert ours.get("duration") is None or ours["duration"] >= 0


def test_runs_list_and_detail_match_upstream(api: Api, upstream: Api, runs: Runs) -> None:
    query = {"_order": "-ts_epoch", "_limit": "30", "_group_limit": "31", "_page": "1"}
    ours, theirs = api.ok("/runs", **query), upstream.ok("/runs", **query)
    assert ours["pages"] == theirs["pages"]
    assert (ours["links"]["next"] is None) == (theirs["links"]["next"] is None)
    assert _compare(_rows(ours), _rows(theirs), ("flow_id", "run_number"), STATUS_TIMES) == []
    for mine, other in zip(sorted(_rows(ours), key=lambda r: (r["flow_id"], r["run_number"])),
                           sorted(_rows(theirs), key=lambda r: (r["flow_id"], r["run_number"])), strict=True):
        _same_status_unless_deliberate(mine, other)
    for flow, run in (("LinearFlow", runs.linear), ("FailingFlow", runs.failed), ("RetryCatchFlow", runs.retry)):
        mine_one, their_one = api.ok(f"/flows/{flow}/runs/{run}"), upstream.ok(f"/flows/{flow}/runs/{run}")
        assert _compare(_rows(mine_one), _rows(their_one), ("run_number",), STATUS_TIMES) == []
        _same_status_unless_deliberate(mine_one["data"], their_one["data"])
    filtered = {"_tags": "ui-tag", "flow_id": "LinearFlow,BranchFlow", "_order": "+flow_id,ts_epoch"}
    assert [r["run_number"] for r in api.data("/runs", **filtered)] == \
        [r["run_number"] for r in upstream.data("/runs", **filtered)]
    grouped = {"_group": "flow_id", "_group_limit": "2", "_limit": "3", "_order": "-ts_epoch"}
    assert [(r["flow_id"], r["run_number"]) for r in api.data("/runs", **grouped)] == \
        [(r["flow_id"], r["run_number"]) for r in upstream.data("/runs", **grouped)]


def test_steps_tasks_and_attempts_match_upstream(api: Api, upstream: Api, runs: Runs) -> None:
    for flow, run in (("RetryCatchFlow", runs.retry), ("ForeachFlow", runs.foreach), ("FailingFlow", runs.failed)):
        base = f"/flows/{flow}/runs/{run}"
        steps = {"_order": "+ts_epoch", "_limit": "1000"}
        assert _compare(api.data(base + "/steps", **steps), upstream.data(base + "/steps", **steps),
                        ("step_name",), {"duration", "finished_at"}) == []
        query = {"_order": "+ts_epoch", "_limit": "1000", "postprocess": "false"}
        ours, theirs = api.data(base + "/tasks", **query), upstream.data(base + "/tasks", **query)
        assert _compare(ours, theirs, ("task_id", "attempt_id"), STATUS_TIMES | {"started_at", "task_ok"}) == []
        mine = {(r["task_id"], r["attempt_id"]): r for r in ours}
        for row in theirs:
            _same_status_unless_deliberate(mine[(row["task_id"], row["attempt_id"])], row)
            if row["started_at"] is not None:
                assert mine[(row["task_id"], row["attempt_id"])]["started_at"] == row["started_at"]
    [flaky] = {t["task_id"] for t in api.data(f"/flows/RetryCatchFlow/runs/{runs.retry}/tasks", _limit="1000")
               if t["step_name"] == "flaky"}
    path = f"/flows/RetryCatchFlow/runs/{runs.retry}/steps/flaky/tasks/{flaky}/attempts"
    assert _compare(api.data(path), upstream.data(path), ("attempt_id",), STATUS_TIMES | {"task_ok"}) == []


def test_metadata_and_artifact_lists_match_upstream(api: Api, upstream: Api, runs: Runs) -> None:
    base = f"/flows/LinearFlow/runs/{runs.linear}"
    query = {"step_name": "start", "_limit": "1000"}
    assert _compare(api.data(base + "/metadata", **query), upstream.data(base + "/metadata", **query),
                    ("id",), set()) == []
    [task] = [t for t in api.data(base + "/tasks", _limit="1000") if t["step_name"] == "start"]
    task_base = f"{base}/steps/start/tasks/{task['task_id']}"
    for query in ({"_limit": "100", "attempt_id:is": "null"}, {"_limit": "100", "attempt_id": "0"}):
        assert _compare(api.data(task_base + "/metadata", **query), upstream.data(task_base + "/metadata", **query),
                        ("id",), set()) == []
    query = {"attempt_id": "0", "_limit": "50"}
    assert _compare(api.data(task_base + "/artifacts", **query), upstream.data(task_base + "/artifacts", **query),
                    ("name",), set()) == []
    local = {"ds_type": "local", "_limit": "1"}
    assert len(api.data(base + "/artifacts", **local)) == len(upstream.data(base + "/artifacts", **local))


def test_autocomplete_matches_upstream(api: Api, upstream: Api, runs: Runs) -> None:
    for path, query in (("/flows/autocomplete", {"_limit": "5", "flow_id:co": "flow"}),
                        ("/flows/LinearFlow/runs/autocomplete", {"_limit": "5", "run:co": runs.linear}),
                        (f"/flows/BranchFlow/runs/{runs.branch}/steps/autocomplete", {"step_name:co": "t"}),
                        (f"/flows/LinearFlow/runs/{runs.linear}/artifacts/autocomplete", {"name:co": "tot"})):
        assert sorted(api.data(path, **query)) == sorted(upstream.data(path, **query)), path


