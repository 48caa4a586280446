"""Generated bad input against every /api route: never a 5xx, errors carry a JSON message, and
the API keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from ui_helpers import Runs, Stack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mfcolab.ui.app import ROUTES

odd_text = st.one_of(
    st.text(min_size=1, max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
    st.sampled_from(["a/b", "a b", "%", "..", ".", "é", "\x00", "\ud800", "x" * 256, "x" * 5000, "-1", "0", "00",
                     "9" * 19, "9" * 40, "٣", "½", "NaN", "null", "true", "{}", "[]", "?", "#", "+row", "-row",
                     "-", "+", ",", ",,", "a,b", "null,null", "(", "[", "\\", "'", '"', "%%", "_", "*"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)

QUERY_NAMES = [
    "_limit", "_page", "_order", "_group", "_group_limit", "_tags", "_tags:any", "_tags:like", "status",
    "flow_id", "flow_id:co", "flow_id:re", "flow_id:xx", "run_number:gt", "ts_epoch:ge", "ts_epoch:is",
    "user", "user:ne", "attempt_id", "attempt_id:is", "taskId", "postprocess", "step_name", "field_name:li",
    "tag:re", "run:co", "name:sw", "duration:lt", "finished_at:le", "id", "x",
]


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def _known(runs: Runs, stack: Stack, session: requests.Session) -> dict[str, str]:
    tasks = session.get(f"{stack.api_url}/flows/ChattyFlow/runs/{runs.chatty}/tasks", timeout=60).json()["data"]
    [task] = [t for t in tasks if t["step_name"] == "start"]
    return {"flow_id": "ChattyFlow", "run_number": runs.chatty, "step_name": "start", "task_id": str(task["task_id"]),
            "stream": "out", "card_hash": "0" * 32}


def _quote(value: str) -> str:
    return quote(value, safe="", errors="surrogatepass")


def check(resp: requests.Response) -> None:
    assert resp.status_code < 500, (resp.request.url, resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        doc = resp.json()
        assert isinstance(doc, dict) and (doc.get("message") or doc.get("data") == {}), resp.text[:300]


@pytest.mark.parametrize(("method", "template"), [(m, t) for m, t, _ in ROUTES], ids=lambda v: str(v))
def test_no_route_answers_5xx_to_generated_input(
    session: requests.Session, stack: Stack, runs: Runs, untouched_datastore: None, method: str, template: str
) -> None:
    known = _known(runs, stack, session)
    names = [part[1:-1] for part in template.split("/") if part.startswith("{")]

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(
        replaced=st.lists(st.sampled_from(names), unique=True) if names else st.just([]),
        values=st.fixed_dictionaries({name: odd_text for name in names}),
        query=st.dictionaries(st.sampled_from(QUERY_NAMES), odd_text, max_size=3),
    )
    def probe(replaced: list[str], values: dict[str, str], query: dict[str, str]) -> None:
        path = template
        for name in names:
            path = path.replace("{" + name + "}", _quote(values[name] if name in replaced else known[name]))
        url = stack.api_url + path
        if query:
            url += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query.items())
        assume(len(url) < 8000)
        check(session.request(method, url, timeout=120))

    probe()
    assert session.get(stack.api_url + "/features", timeout=30).status_code == 200


def test_unknown_routes_and_methods_get_a_json_404(session: requests.Session, stack: Stack) -> None:
    for path in ("/nothing", "/flows", "/flows/x/runs/1/steps/s/tasks/1/logs/sideways", "/runs/extra"):
        resp = session.get(stack.api_url + path, timeout=30)
        assert resp.status_code in (404, 405) and resp.json()["message"], path
    resp = session.post(stack.api_url + "/runs", data=b"{}", timeout=30)
    assert resp.status_code in (404, 405) and resp.json()["message"]


def test_the_websocket_answers_ping_with_pong(stack: Stack) -> None:
    import asyncio

    import aiohttp

    async def exchange() -> list[str]:
        async with aiohttp.ClientSession() as client, client.ws_connect(stack.api_url + "/ws") as socket:
            await socket.send_str('{"type":"SUBSCRIBE","uuid":"u1","resource":"/runs"}')
            await socket.send_str("__ping__")
            answer = await asyncio.wait_for(socket.receive(), 30)
            return [answer.data]

    assert asyncio.run(exchange()) == ["__pong__"]
    plain = requests.get(stack.api_url + "/ws", timeout=30)
    assert plain.status_code == 400 and plain.json()["message"]
