"""The metadata service's HTTP contract, route by route, against real Postgres over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg2
import pytest
import requests
from helpers import wait_until
from service_helpers import CLIENT_SYSTEM_TAGS, Api, artifact, metadatum

VERSION_HEADER = "METADATA_SERVICE_VERSION"


@pytest.fixture()
def api(http: requests.Session, service_url: str) -> Api:
    return Api(http, service_url)


def sql(dsn: str, statement: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, args)
        return cur.fetchall() if cur.description else []


def heartbeat_wait(resp: requests.Response) -> int:
    """What the client does with a heartbeat answer: json.loads(response.json())."""
    return int(json.loads(resp.json())["wait_time_in_seconds"])


# --- service routes ---------------------------------------------------------------------------

def test_ping_answers_pong_with_the_version_header(api: Api) -> None:
    resp = api.get("/ping")
    assert resp.status_code == 200
    assert resp.text == "pong"
    assert resp.headers[VERSION_HEADER] == "2.5.1"


def test_version_is_plain_text_without_the_header(api: Api) -> None:
    resp = api.get("/version")
    assert resp.status_code == 200
    assert resp.text == "2.5.1"
    assert VERSION_HEADER not in resp.headers


def test_healthcheck_is_a_double_encoded_status(api: Api) -> None:
    resp = api.get("/healthcheck")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert json.loads(resp.json()) == {"status": "UP"}


def test_unknown_route_and_method_are_json_404(api: Api, flow_name: str) -> None:
    for method, path in [("GET", "/nothing/here"), ("DELETE", f"/flows/{flow_name}"), ("PUT", "/flows"),
                         ("GET", f"/flows/{flow_name}/run")]:
        resp = api.http.request(method, api.url(path), timeout=30)
        assert resp.status_code == 404, (method, path)
        assert "message" in resp.json()


# --- flows ------------------------------------------------------------------------------------

def test_flow_create_get_list_and_duplicate(api: Api, flow_name: str) -> None:
    missing = api.get(f"/flows/{flow_name}")
    assert (missing.status_code, missing.json()) == (404, {})

    created = api.post(f"/flows/{flow_name}", {"flow_id": flow_name, "ts_epoch": 5})
    assert created.status_code == 200
    body = created.json()
    assert body["flow_id"] == flow_name
    assert body["tags"] is None and body["system_tags"] is None and body["user_name"] is None
    assert body["ts_epoch"] > 1_600_000_000_000  # server-side milliseconds; the client's value is ignored
    assert created.headers[VERSION_HEADER] == "2.5.1"

    again = api.post(f"/flows/{flow_name}", {})
    assert again.status_code == 409
    assert "already exists" in again.json()["message"]

    assert api.get(f"/flows/{flow_name}").json() == body
    assert body in api.get("/flows").json()


def test_flow_create_accepts_an_empty_body_and_keeps_given_tags(api: Api, flow_name: str) -> None:
    assert api.http.post(api.url(f"/flows/{flow_name}"), timeout=30).status_code == 200
    other = flow_name + "T"
    body = api.post(f"/flows/{other}", {"user_name": "u", "tags": ["a"], "system_tags": ["s"]}).json()
    assert (body["user_name"], body["tags"], body["system_tags"]) == ("u", ["a"], ["s"])


# --- runs -------------------------------------------------------------------------------------

def test_run_numbers_are_one_global_sequence(api: Api, flow_name: str) -> None:
    first, second = flow_name + "A", flow_name + "B"
    api.flow(first)
    api.flow(second)
    numbers = [api.run(first)["run_number"], api.run(second)["run_number"], api.run(first)["run_number"]]
    assert all(isinstance(n, int) for n in numbers)
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


def test_run_create_shape_and_reads(api: Api, flow_name: str) -> None:
    api.flow(flow_name)
    run = api.run(flow_name, tags=["t1"])
    assert set(run) >= {"flow_id", "run_number", "user_name", "ts_epoch", "tags", "system_tags", "last_heartbeat_ts"}
    assert run["tags"] == ["t1"] and run["system_tags"] == CLIENT_SYSTEM_TAGS
    assert run["user"] == "tester"
    got = api.get(f"/flows/{flow_name}/runs/{run['run_number']}")
    assert got.status_code == 200 and got.json()["run_number"] == run["run_number"]
    assert [r["run_number"] for r in api.get(f"/flows/{flow_name}/runs").json()] == [run["run_number"]]
    missing = api.get(f"/flows/{flow_name}/runs/999999999")
    assert (missing.status_code, missing.json()) == (404, {})
    assert api.get(f"/flows/{flow_name}X/runs").json() == []


def test_run_with_external_id(api: Api, flow_name: str) -> None:
    api.flow(flow_name)
    run = api.run(flow_name, run_id="argo-abc-1")
    assert run["run_number"] == "argo-abc-1"
    got = api.get(f"/flows/{flow_name}/runs/argo-abc-1")
    assert got.status_code == 200 and got.json()["run_number"] == "argo-abc-1"
    dup = api.post(f"/flows/{flow_name}/run", {"run_number": "argo-abc-1", "system_tags": []})
    assert dup.status_code == 409 and "message" in dup.json()


@pytest.mark.parametrize("value", ["12", 12, 1.5, True, ["x"], {"a": 1}])
def test_run_create_refuses_a_numeric_or_non_string_external_id(api: Api, flow_name: str, value: Any) -> None:
    api.flow(flow_name)
    resp = api.post(f"/flows/{flow_name}/run", {"run_number": value})
    assert resp.status_code == 400
    assert "run_number" in resp.json()["message"]


def test_run_create_for_a_missing_flow_is_404(api: Api, flow_name: str) -> None:
    resp = api.post(f"/flows/{flow_name}/run", {"system_tags": []})
    assert resp.status_code == 404 and flow_name in resp.json()["message"]


@pytest.mark.parametrize(
    ("system_tags", "capable"),
    [
        (["metaflow_version:2.19.39"], True),
        (["metaflow_version:2.2.12"], True),
        (["metaflow_version:2.2.11"], False),
        (["metaflow_version:1.14.0"], True),
        (["metaflow_version:1.13.9"], False),
        (["metaflow_version:custom-build"], True),
        (["user:x"], False),
        ([], False),
    ],
)
def test_last_heartbeat_ts_is_set_only_for_heartbeat_capable_clients(
    api: Api, flow_name: str, system_tags: list[str], capable: bool
) -> None:
    api.flow(flow_name)
    run = api.run(flow_name, system_tags=system_tags)
    api.step(flow_name, run["run_number"], "start")
    task = api.task(flow_name, run["run_number"], "start", system_tags=system_tags)
    for obj in (run, task):
        if capable:
            assert abs(obj["last_heartbeat_ts"] - time.time()) < 60
        else:
            assert obj["last_heartbeat_ts"] is None


# --- heartbeats -------------------------------------------------------------------------------

def test_run_heartbeat_follows_the_ten_second_rule(api: Api, flow_name: str, pg_dsn: str) -> None:
    api.flow(flow_name)
    run = api.run(flow_name, system_tags=[])["run_number"]
    path = f"/flows/{flow_name}/runs/{run}/heartbeat"
    first = api.http.post(api.url(path), data="{}", timeout=30)
    assert first.status_code == 200 and heartbeat_wait(first) == 10
    second = api.http.post(api.url(path), data="{}", timeout=30)
    assert second.status_code == 404 and heartbeat_wait(second) == 10
    sql(pg_dsn, "UPDATE runs_v3 SET last_heartbeat_ts = last_heartbeat_ts - 10 WHERE flow_id = %s", flow_name)
    assert api.http.post(api.url(path), data="{}", timeout=30).status_code == 200
    stored = sql(pg_dsn, "SELECT last_heartbeat_ts FROM runs_v3 WHERE flow_id = %s", flow_name)[0][0]
    assert abs(stored - time.time()) < 60


def test_task_heartbeat_and_the_run_bump_on_task_create(api: Api, flow_name: str, pg_dsn: str) -> None:
    run, task = api.chain(flow_name)
    path = api.task_path(flow_name, run, "start", task) + "/heartbeat"
    # A heartbeat-capable client's task was stamped at creation: too recent.
    assert api.post(path, {}).status_code == 404
    sql(pg_dsn, "UPDATE tasks_v3 SET last_heartbeat_ts = last_heartbeat_ts - 11 WHERE flow_id = %s", flow_name)
    ok = api.post(path, {})
    assert ok.status_code == 200 and heartbeat_wait(ok) == 10
    # Creating a task bumps the run's heartbeat.
    sql(pg_dsn, "UPDATE runs_v3 SET last_heartbeat_ts = 1000 WHERE flow_id = %s", flow_name)
    api.task(flow_name, run, "start")
    stored = sql(pg_dsn, "SELECT last_heartbeat_ts FROM runs_v3 WHERE flow_id = %s", flow_name)[0][0]
    assert abs(stored - time.time()) < 60


def test_heartbeat_for_a_missing_object_is_404_with_the_same_body(api: Api, flow_name: str) -> None:
    for path in [f"/flows/{flow_name}/runs/5/heartbeat", f"/flows/{flow_name}/runs/5/steps/a/tasks/7/heartbeat"]:
        resp = api.post(path, {})
        assert resp.status_code == 404 and heartbeat_wait(resp) == 10


# --- steps ------------------------------------------------------------------------------------

def test_step_create_get_list_duplicate(api: Api, flow_name: str) -> None:
    api.flow(flow_name)
    run = api.run(flow_name, tags=["rt"])["run_number"]
    step = api.step(flow_name, run, "start")
    assert step["run_number"] == str(run)  # steps expose run_number as a string
    assert step["tags"] == ["rt"] and step["system_tags"] == CLIENT_SYSTEM_TAGS
    dup = api.post(f"/flows/{flow_name}/runs/{run}/steps/start/step", {})
    assert dup.status_code == 409
    assert api.get(f"/flows/{flow_name}/runs/{run}/steps/start").json() == step
    assert api.get(f"/flows/{flow_name}/runs/{run}/steps").json() == [step]
    missing = api.get(f"/flows/{flow_name}/runs/{run}/steps/nope")
    assert (missing.status_code, missing.json()) == (404, {})


def test_step_create_under_a_missing_run_is_404(api: Api, flow_name: str) -> None:
    api.flow(flow_name)
    resp = api.post(f"/flows/{flow_name}/runs/123456789/steps/start/step", {})
    assert resp.status_code == 404 and "message" in resp.json()


# --- tasks ------------------------------------------------------------------------------------

def test_task_create_get_list(api: Api, flow_name: str) -> None:
    run, first = api.chain(flow_name)
    second = api.task(flow_name, run, "start")["task_id"]
    assert isinstance(first, int) and second > first
    got = api.get(api.task_path(flow_name, run, "start", first))
    assert got.status_code == 200
    assert {"flow_id", "run_number", "step_name", "task_id", "ts_epoch", "tags", "system_tags",
            "last_heartbeat_ts"} <= set(got.json())
    listed = api.get(f"/flows/{flow_name}/runs/{run}/steps/start/tasks").json()
    assert [t["task_id"] for t in listed] == [first, second]
    missing = api.get(api.task_path(flow_name, run, "start", 10**15))
    assert (missing.status_code, missing.json()) == (404, {})


def test_task_with_external_id(api: Api, flow_name: str) -> None:
    run, _ = api.chain(flow_name)
    task = api.task(flow_name, run, "start", task_id="t-abc")
    assert task["task_id"] == "t-abc"
    assert api.get(api.task_path(flow_name, run, "start", "t-abc")).json()["task_id"] == "t-abc"
    dup = api.post(f"/flows/{flow_name}/runs/{run}/steps/start/task", {"task_id": "t-abc"})
    assert dup.status_code == 409


@pytest.mark.parametrize("value", ["5", 5, 2.0, False, ["t"]])
def test_task_create_refuses_a_numeric_or_non_string_external_id(api: Api, flow_name: str, value: Any) -> None:
    run, _ = api.chain(flow_name)
    resp = api.post(f"/flows/{flow_name}/runs/{run}/steps/start/task", {"task_id": value})
    assert resp.status_code == 400 and "task_id" in resp.json()["message"]


def test_task_create_under_a_missing_step_is_404(api: Api, flow_name: str) -> None:
    run, _ = api.chain(flow_name)
    resp = api.post(f"/flows/{flow_name}/runs/{run}/steps/other/task", {})
    assert resp.status_code == 404 and "message" in resp.json()


def test_external_run_id_everywhere(api: Api, flow_name: str) -> None:
    api.flow(flow_name)
    api.run(flow_name, run_id="sfn-xyz")
    step = api.step(flow_name, "sfn-xyz", "start")
    assert step["run_number"] == "sfn-xyz"
    task = api.task(flow_name, "sfn-xyz", "start", task_id="job-1")
    assert (task["run_number"], task["task_id"]) == ("sfn-xyz", "job-1")
    base = api.task_path(flow_name, "sfn-xyz", "start", "job-1")
    assert api.post(base + "/metadata", [metadatum("attempt", "0")]).json() == {"metadata_created": 1}
    assert api.post(base + "/artifact", [artifact("name")]).json() == {"artifacts_created": 1}
    [meta] = api.get(base + "/metadata").json()
    [art] = api.get(base + "/artifacts").json()
    for row in (meta, art):
        assert (row["run_number"], row["task_id"]) == ("sfn-xyz", "job-1")
    paths = api.get(f"/flows/{flow_name}/runs/sfn-xyz/steps/start/filtered_tasks").json()
    assert paths == [f"{flow_name}/sfn-xyz/start/job-1"]


# --- metadata ---------------------------------------------------------------------------------

def test_metadata_post_and_read(api: Api, flow_name: str) -> None:
    run, task = api.chain(flow_name)
    base = api.task_path(flow_name, run, "start", task)
    items = [metadatum("attempt", "0"), metadatum("foreach-stack", ["items=1", "inner=a,b"]),
             metadatum("attempt_ok", "True", type_="internal_attempt_status")]
    assert api.post(base + "/metadata", items).json() == {"metadata_created": 3}
    # The client re-sends fields on every attempt: rows accumulate.
    assert api.post(base + "/metadata", [metadatum("attempt", "1", attempt=1)]).json() == {"metadata_created": 1}
    rows = api.get(base + "/metadata").json()
    assert len(rows) == 4
    assert [(r["ts_epoch"], r["id"]) for r in rows] == sorted(((r["ts_epoch"], r["id"]) for r in rows), reverse=True)
    by_field = {r["field_name"]: r for r in rows if r["field_name"] != "attempt"}
    stack = by_field["foreach-stack"]["value"]
    assert isinstance(stack, str) and json.loads(stack) == ["items=1", "inner=a,b"]
    assert by_field["attempt_ok"]["type"] == "internal_attempt_status"
    assert {r["tags"][0] for r in rows} == {"attempt_id:0", "attempt_id:1"}  # own tags, not the run's
    assert {"id", "flow_id", "run_number", "step_name", "task_id", "field_name", "value", "type",
            "user_name", "ts_epoch", "tags", "system_tags"} <= set(rows[0])
    assert len(api.get(f"/flows/{flow_name}/runs/{run}/metadata").json()) == 4


def test_metadata_defaults_and_non_string_values(api: Api, flow_name: str) -> None:
    run, task = api.chain(flow_name)
    base = api.task_path(flow_name, run, "start", task)
    resp = api.post(base + "/metadata", [{}, {"field_name": "n", "value": 7}, {"field_name": "skip", "value": None}])
    assert resp.json() == {"metadata_created": 2}
    rows = {r["field_name"]: r for r in api.get(base + "/metadata").json()}
    assert rows[" "]["value"] == " " and rows[" "]["type"] == " "
    assert rows["n"]["value"] == "7"
    assert "skip" not in rows


def test_metadata_for_an_unknown_task_is_400(api: Api, flow_name: str) -> None:
    run, task = api.chain(flow_name)
    for path in [api.task_path(flow_name, run, "start", task + 1000), api.task_path(flow_name, run, "end", task),
                 api.task_path(flow_name, "no-such-run", "start", task)]:
        for kind in ("metadata", "artifact"):
            resp = api.post(f"{path}/{kind}", [])
            assert resp.status_code == 400
            assert resp.json() == {"message": "need to register run_id and task_id first"}


# --- artifacts --------------------------------------------------------------------------------

def test_artifacts_latest_attempt_and_attempt_routes(api: Api, flow_name: str) -> None:
    run, task = api.chain(flow_name)
    base = api.task_path(flow_name, run, "start", task)
    first = [artifact("name", 0), artifact("x", 0), artifact("only_in_0", 0)]
    assert api.post(base + "/artifact", first).json() == {"artifacts_created": 3}
    # Duplicates are skipped silently and not counted.
    assert api.post(base + "/artifact", [artifact("x", 0), artifact("name", 1), artifact("x", 1)]).json() == {
        "artifacts_created": 2}

    latest = api.get(base + "/artifacts").json()
    assert sorted((a["name"], a["attempt_id"]) for a in latest) == [("name", 1), ("x", 1)]
    attempt0 = api.get(base + "/attempt/0/artifacts").json()
    assert sorted(a["name"] for a in attempt0) == ["name", "only_in_0", "x"]
    assert api.get(base + "/attempt/7/artifacts").json() == []

    x = api.get(base + "/artifacts/x")
    assert x.status_code == 200 and x.json()["attempt_id"] == 1 and x.json()["sha"] == "sha-x-1"
    assert {"flow_id", "run_number", "step_name", "task_id", "name", "location", "ds_type", "sha", "type",
            "content_type", "user_name", "attempt_id", "ts_epoch", "tags", "system_tags"} <= set(x.json())
    # Latest attempt is that of "name": an artifact absent there is not found without an attempt.
    gone = api.get(base + "/artifacts/only_in_0")
    assert (gone.status_code, gone.json()) == (404, {})
    assert api.get(base + "/artifacts/only_in_0/attempt/0").json()["attempt_id"] == 0
    missing = api.get(base + "/artifacts/x/attempt/5")
    assert (missing.status_code, missing.json()) == (404, {})

    step_level = api.get(f"/flows/{flow_name}/runs/{run}/steps/start/artifacts").json()
    run_level = api.get(f"/flows/{flow_name}/runs/{run}/artifacts").json()
    assert sorted(a["name"] for a in step_level) == sorted(a["name"] for a in run_level) == ["name", "x"]


def test_artifact_defaults(api: Api, flow_name: str) -> None:
    run, task = api.chain(flow_name)
    base = api.task_path(flow_name, run, "start", task)
    assert api.post(base + "/artifact", [{"name": "a"}]).json() == {"artifacts_created": 1}
    row = api.get(base + "/artifacts/a").json()
    assert (row["location"], row["ds_type"], row["sha"], row["attempt_id"]) == (" ", " ", " ", 0)


# --- tags -------------------------------------------------------------------------------------

def test_tag_mutation_and_grafting(api: Api, flow_name: str) -> None:
    run, task = api.chain(flow_name, tags=["keep", "drop"])
    base = api.task_path(flow_name, run, "start", task)
    api.post(base + "/artifact", [artifact("name")])
    api.post(base + "/metadata", [metadatum("attempt", "0")])
    mutate = f"/flows/{flow_name}/runs/{run}/tag/mutate"
    resp = api.patch(mutate, {"tags_to_add": ["new", "user:tester"], "tags_to_remove": ["drop"]})
    assert resp.status_code == 200
    assert resp.json() == {"tags": ["keep", "new"]}  # a system tag is never added as a user tag
    assert api.get(f"/flows/{flow_name}/runs/{run}").json()["tags"] == ["keep", "new"]
    # Steps, tasks and artifacts carry their run's tags; metadata keeps its own.
    for path in [f"/flows/{flow_name}/runs/{run}/steps/start", base, base + "/artifacts/name"]:
        assert api.get(path).json()["tags"] == ["keep", "new"], path
    assert api.get(f"/flows/{flow_name}/runs/{run}/steps").json()[0]["system_tags"] == CLIENT_SYSTEM_TAGS
    assert api.get(base + "/metadata").json()[0]["tags"] == ["attempt_id:0"]
    # No change is still a 200 with the tags.
    assert api.patch(mutate, {"tags_to_add": ["keep"]}).json() == {"tags": ["keep", "new"]}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"tags_to_remove": ["user:tester"]}, 422),
        ({"tags_to_add": "a"}, 400),
        ({"tags_to_remove": {"a": 1}}, 400),
        ({"tags_to_add": [1]}, 400),
        ({"tags_to_add": [["a"]]}, 400),
        ([], 400),
    ],
)
def test_tag_mutation_refusals(api: Api, flow_name: str, body: Any, status: int) -> None:
    run, _ = api.chain(flow_name)
    resp = api.patch(f"/flows/{flow_name}/runs/{run}/tag/mutate", body)
    assert resp.status_code == status
    assert resp.json()["message"]


def test_tag_mutation_of_a_missing_run_is_404(api: Api, flow_name: str) -> None:
    api.flow(flow_name)
    for run in ("424242424", "no-such-run", "99999999999999999999"):
        resp = api.patch(f"/flows/{flow_name}/runs/{run}/tag/mutate", {"tags_to_add": ["a"]})
        assert resp.status_code == 404 and resp.json()["message"]


def test_concurrent_tag_mutation_is_a_409(api: Api, flow_name: str, pg_dsn: str) -> None:
    """A mutation whose run row changes under it (committed by another transaction) must
    fail with 409, the status the client retries."""
    run, _ = api.chain(flow_name)
    conn = psycopg2.connect(pg_dsn)
    try:
        cur = conn.cursor()
        cur.execute("SET application_name = 'tag-blocker'")
        cur.execute("UPDATE runs_v3 SET tags = '[\"other\"]' WHERE flow_id = %s", (flow_name,))
        result: dict[str, requests.Response] = {}

        def mutate() -> None:
            result["resp"] = requests.patch(api.url(f"/flows/{flow_name}/runs/{run}/tag/mutate"),
                                            json={"tags_to_add": ["mine"]}, timeout=60)

        worker = threading.Thread(target=mutate)
        worker.start()
        wait_until(lambda: sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                       " AND query LIKE 'UPDATE runs_v3 SET tags%%'")[0][0],
                   timeout=30, interval=0.02, what="the service's UPDATE to wait on the row lock")
        conn.commit()
        worker.join(60)
    finally:
        conn.close()
    assert result["resp"].status_code == 409
    assert "retry" in result["resp"].json()["message"]


# --- filtered_tasks ---------------------------------------------------------------------------

def test_filtered_tasks(api: Api, flow_name: str) -> None:
    api.flow(flow_name)
    run = api.run(flow_name)["run_number"]
    api.step(flow_name, run, "body")
    tasks = [api.task(flow_name, run, "body")["task_id"] for _ in range(3)]
    for index, task in enumerate(tasks):
        path = api.task_path(flow_name, run, "body", task) + "/metadata"
        api.post(path, [metadatum("foreach-execution-path", f"start:0,split:{index}")])
    route = f"/flows/{flow_name}/runs/{run}/steps/body/filtered_tasks"
    everything = api.get(route).json()
    assert everything == [f"{flow_name}/{run}/body/{t}" for t in tasks]
    one = api.get(route, params={"metadata_field_name": "foreach-execution-path", "pattern": "^(?:start:0,split:1)$"})
    assert one.json() == [f"{flow_name}/{run}/body/{tasks[1]}"]
    none = api.get(route, params={"metadata_field_name": "other", "pattern": ".+"})
    assert none.json() == []
    bad = api.get(route, params={"metadata_field_name": "foreach-execution-path", "pattern": "(unclosed"})
    assert bad.status_code == 400 and "regular expression" in bad.json()["message"]


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["x" * 256, "a\x00b"])
def test_bad_names_are_400(api: Api, name: str) -> None:
    quoted = requests.utils.quote(name, safe="")
    for method, path in [("GET", f"/flows/{quoted}"), ("POST", f"/flows/{quoted}"),
                         ("GET", f"/flows/{quoted}/runs/1/steps/s/tasks/1/artifacts")]:
        resp = api.http.request(method, api.url(path), timeout=30)
        assert resp.status_code == 400, (method, path)
        assert resp.json()["message"]


def test_odd_characters_in_names_round_trip(api: Api) -> None:
    for name in ["Flow é ünïcødé ✓", "with space", "semi;colon", "x" * 255]:
        quoted = requests.utils.quote(name, safe="")
        assert api.post(f"/flows/{quoted}", {}).status_code in (200, 409)
        got = api.get(f"/flows/{quoted}")
        assert got.status_code == 200 and got.json()["flow_id"] == name


def test_a_slash_in_a_created_name_is_refused(api: Api) -> None:
    resp = api.post("/flows/a%2Fb", {})
    assert resp.status_code == 400 and "/" in resp.json()["message"]


@pytest.mark.parametrize("raw", [b"{", b"[1,", b"\xff\xfe", b"nul\x00", b"[" * 100_000, b'"\\ud800"'])
def test_malformed_bodies_are_400(api: Api, flow_name: str, raw: bytes) -> None:
    run, task = api.chain(flow_name)
    base = api.task_path(flow_name, run, "start", task)
    for path in [f"/flows/{flow_name}X", f"/flows/{flow_name}/run", base + "/metadata", base + "/artifact",
                 f"/flows/{flow_name}/runs/{run}/steps/s2/step", f"/flows/{flow_name}/runs/{run}/steps/start/task"]:
        resp = api.http.post(api.url(path), data=raw, timeout=30)
        assert resp.status_code == 400, (path, resp.text)
        assert resp.json()["message"]


@pytest.mark.parametrize(
    "item",
    [
        {"field_name": 5}, {"field_name": "x" * 256}, {"type": ["a"]}, {"tags": "a"}, {"tags": [1]},
        {"value": "nul\x00"}, {"user_name": {"a": 1}}, "not an object", None, 17,
    ],
)
def test_bad_metadata_items_are_400(api: Api, flow_name: str, item: Any) -> None:
    run, task = api.chain(flow_name)
    resp = api.post(api.task_path(flow_name, run, "start", task) + "/metadata", [item])
    assert resp.status_code == 400 and resp.json()["message"]


@pytest.mark.parametrize(
    "item",
    [{"attempt_id": -1}, {"attempt_id": 40000}, {"attempt_id": "x"}, {"attempt_id": 1.5}, {"attempt_id": True},
     {"attempt_id": 10**30}, {"name": 3}, {"location": "x" * 300}, {"sha": ["a"]}],
)
def test_bad_artifact_items_are_400(api: Api, flow_name: str, item: Any) -> None:
    run, task = api.chain(flow_name)
    resp = api.post(api.task_path(flow_name, run, "start", task) + "/artifact", [item])
    assert resp.status_code == 400 and resp.json()["message"]


def test_huge_numbers_in_paths_are_not_found(api: Api, flow_name: str) -> None:
    run, task = api.chain(flow_name)
    huge = "9" * 40
    assert api.get(f"/flows/{flow_name}/runs/{huge}").status_code == 404
    assert api.get(api.task_path(flow_name, run, "start", huge)).status_code == 404
    assert api.get(api.task_path(flow_name, huge, "start", task)).status_code == 404
    assert api.get(api.task_path(flow_name, run, "start", task) + f"/attempt/{huge}/artifacts").json() == []
    assert api.post(api.task_path(flow_name, run, "start", huge) + "/heartbeat", {}).status_code == 404
    bad_attempt = api.get(api.task_path(flow_name, run, "start", task) + "/attempt/-1/artifacts")
    assert bad_attempt.status_code == 400


# --- database faults ----------------------------------------------------------------------------

def test_service_recovers_when_its_database_connections_are_killed(api: Api, flow_name: str, pg_dsn: str) -> None:
    """Killed backends (as when Postgres restarts) cost at most a retryable 503, never a 500,
    and the service serves again right after."""
    api.flow(flow_name)
    for _ in range(3):
        assert api.get(f"/flows/{flow_name}").status_code == 200
    killed = sql(pg_dsn, "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE application_name = 'mfcolab-metadata-service'")
    assert killed, "the service's connections should be visible by their application_name"
    # pg_terminate_backend only signals: wait until every one of those backends is gone.
    pids = [row[0] for row in killed]
    wait_until(lambda: not sql(pg_dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", pids),
               timeout=30, interval=0.02, what="the terminated backends to exit")
    statuses = [api.get(f"/flows/{flow_name}").status_code for _ in range(12)]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) <= 1, statuses
    assert statuses[-1] == 200
    assert api.get(f"/flows/{flow_name}/runs").status_code == 200
