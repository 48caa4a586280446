"""Generated bad input against every route: never a 5xx, errors carry a JSON message, and the
service keeps serving."""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from service_helpers import Api, artifact, metadatum

from mfcolab.service.app import ROUTES


class Known:
    """Objects that exist, so generated input also reaches the code behind the lookups."""

    def __init__(self, api: Api) -> None:
        self.flow = f"Bad{uuid.uuid4().hex[:10]}"
        self.run, self.task = api.chain(self.flow)
        base = api.task_path(self.flow, self.run, "start", self.task)
        api.post(base + "/metadata", [metadatum("attempt", "0")])
        api.post(base + "/artifact", [artifact("name")])
        self.values = {
            "flow_id": self.flow, "run_number": str(self.run), "step_name": "start", "task_id": str(self.task),
            "artifact_name": "name", "attempt_id": "0", "stream": "stdout",
        }


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture(scope="module")
def known(session: requests.Session, service_url: str) -> Known:
    return Known(Api(session, service_url))


odd_text = st.one_of(
    st.text(min_size=1, max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
    st.sampled_from(["a/b", "a b", "%", "..", "é", "\x00", "\ud800", "x" * 256, "x" * 5000, "-1", "0", "00",
                     "9" * 19, "9" * 40, "12345678901234567890", "٣", "½", "NaN", "null", "{}", "[]", "?", "#"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.sampled_from(["\x00", "\ud800", "x" * 300, "12", "".join(string.digits)]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

FIELDS = ["flow_id", "run_number", "task_id", "step_name", "user_name", "tags", "system_tags", "field_name",
          "value", "type", "name", "location", "ds_type", "sha", "content_type", "attempt_id", "ts_epoch",
          "tags_to_add", "tags_to_remove"]

shaped_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)

bodies = st.one_of(
    st.none(),
    shaped_objects.map(json.dumps),
    st.lists(shaped_objects, max_size=4).map(json.dumps),
    st.lists(json_values, max_size=3).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=64),
    st.sampled_from([b"{", b"[", b"\xff", b"[" * 5000, b'{"tags": "\\u0000"}', b'[{"value": "\\ud800"}]',
                     b'{"run_number": 99999999999999999999999999}', b"1e999999"]),
)


def render(template: str, segments: dict[str, str]) -> str:
    path = template
    for name, value in segments.items():
        path = path.replace("{" + name + "}", _quote(value))
    return path


def _quote(value: str) -> str:
    # surrogatepass: lone surrogates go out as (invalid UTF-8) bytes, the way a broken client would
    return quote(value, safe="", errors="surrogatepass")


def check(resp: requests.Response) -> None:
    assert resp.status_code < 500, (resp.request.method, resp.request.url, resp.status_code, resp.text[:300])
    if resp.status_code >= 400 and resp.status_code != 404:
        doc = resp.json()
        assert isinstance(doc, dict) and doc.get("message"), resp.text[:300]


@pytest.mark.parametrize(("method", "template"), [(m, t) for m, t, _ in ROUTES], ids=lambda v: str(v))
def test_no_route_answers_5xx_to_generated_input(
    session: requests.Session, service_url: str, known: Known, method: str, template: str
) -> None:
    names = [part[1:-1] for part in template.split("/") if part.startswith("{")]

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(
        replaced=st.lists(st.sampled_from(names), unique=True) if names else st.just([]),
        values=st.fixed_dictionaries({name: odd_text for name in names}),
        body=bodies,
        query=st.dictionaries(st.sampled_from(["metadata_field_name", "pattern", "_limit", "x"]), odd_text, max_size=2),
    )
    def probe(replaced: list[str], values: dict[str, str], body: Any, query: dict[str, str]) -> None:
        segments = {name: (values[name] if name in replaced else known.values[name]) for name in names}
        url = service_url + render(template, segments)
        if query:
            url += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query.items())
        # aiohttp's HTTP parser itself refuses request lines over 8190 bytes (a plain 400).
        assume(len(url) < 8000)
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        resp = session.request(method, url, data=data, timeout=60, headers={"Content-Type": "application/json"})
        check(resp)

    probe()
    assert session.get(service_url + "/ping", timeout=30).status_code == 200


def test_the_service_still_serves_real_work_afterwards(session: requests.Session, service_url: str) -> None:
    api = Api(session, service_url)
    run, task = api.chain(f"After{uuid.uuid4().hex[:8]}")
    assert isinstance(run, int) and isinstance(task, int)


def test_tags_are_bounded_in_length_and_count(session: requests.Session, service_url: str) -> None:
    """One huge tag used to break the step's task list for good (every task row repeats the run's tags)."""
    from mfcolab.service.inputs import TAG_MAX, TAGS_MAX

    api = Api(session, service_url)
    flow = f"Tags{uuid.uuid4().hex[:10]}"
    run, _ = api.chain(flow)
    too_long, too_many = ["x" * (TAG_MAX + 1)], [f"t{i}" for i in range(TAGS_MAX + 1)]
    for tags in (too_long, too_many):
        for field in ("tags", "system_tags"):
            answer = api.post(f"/flows/{flow}/run", {field: tags, "user_name": "u"})
            assert answer.status_code == 400 and field in answer.json()["message"], (field, len(tags))
    for field in ("tags_to_add", "tags_to_remove"):
        answer = api.patch(f"/flows/{flow}/runs/{run}/tag/mutate", {field: too_long})
        assert answer.status_code == 400 and field in answer.json()["message"], field
    for batch in range(TAGS_MAX // 10 + 1):
        answer = api.patch(f"/flows/{flow}/runs/{run}/tag/mutate",
                           {"tags_to_add": [f"b{batch}-{i}" for i in range(10)]})
        if answer.status_code != 200:
            break
    assert answer.status_code == 400 and "tags" in answer.json()["message"]
    fine = api.post(f"/flows/{flow}/run", {"tags": ["x" * TAG_MAX] * 3, "user_name": "u"})
    assert fine.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_labelled_other_than_json_is_refused(session: requests.Session, service_url: str, content_type: str) -> None:
    """What a page of another site can send without a CORS preflight never reaches a handler."""
    flow = f"Label{uuid.uuid4().hex[:10]}"
    answer = session.post(f"{service_url}/flows/{flow}", data=b'{"flow_id": "x"}', headers={"Content-Type": content_type},
                          timeout=30)
    assert answer.status_code == 415 and "JSON" in answer.json()["message"]
    assert session.get(f"{service_url}/flows/{flow}", timeout=30).status_code == 404
    assert session.post(f"{service_url}/flows/{flow}", json={"flow_id": flow}, timeout=30).status_code == 200
