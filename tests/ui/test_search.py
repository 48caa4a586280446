"""The search socket (`/api/search/flows/{f}/runs/{r}`) spoken to with a plain WebSocket client:
a foreach's tasks found by an artifact's value (substring, exact in quotes, no value), by their
foreach variable, with progress before the result; bad queries get an error event."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from ui_helpers import Api, Runs, Stack

from mfcolab.ui.admin import FEATURES

pytestmark = pytest.mark.slow


def search(stack: Stack, flow: str, run: str, query: str, path: str = "/search/flows/{f}/runs/{r}") -> list[dict[str, Any]]:
    """Every event the socket sends before it closes."""

    async def talk() -> list[dict[str, Any]]:
        url = stack.api_url + path.format(f=flow, r=run) + "?" + query
        events: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            async for frame in ws:
                assert frame.type == aiohttp.WSMsgType.TEXT, frame
                events.append(json.loads(frame.data)["event"])
        return events

    return asyncio.run(asyncio.wait_for(talk(), 300))


def square_tasks(api: Api, runs: Runs) -> dict[str, int]:
    """task id (as the UI compares it, text) -> the `result` its square task stored (items are 0..4)."""
    rows = api.data(f"/flows/ForeachFlow/runs/{runs.foreach}/artifacts", postprocess="true", name="result", _limit=100)
    return {str(row["task_id"]): int(row["content"]) for row in rows if row["step_name"] == "square"}


def found(events: list[dict[str, Any]]) -> set[str]:
    assert events[-1]["type"] == "result", events
    assert all(match["searchable"] for match in events[-1]["matches"])
    return {match["task_id"] for match in events[-1]["matches"]}


def test_search_is_on_in_the_features(api: Api) -> None:
    assert api.ok("/features") == FEATURES
    assert FEATURES["FEATURE_ARTIFACT_SEARCH"] and FEATURES["FEATURE_FOREACH_VAR_SEARCH"]


def test_an_artifact_value_finds_its_tasks_as_a_substring_or_whole_in_quotes(stack: Stack, api: Api, runs: Runs) -> None:
    results = square_tasks(api, runs)
    assert sorted(results.values()) == [0, 1, 4, 9, 16]
    events = search(stack, "ForeachFlow", runs.foreach, "key=result&value=1&scope=ARTIFACT")
    assert [event["type"] for event in events] == ["progress", "result"] and events[0]["fraction"] == 1
    assert found(events) == {task for task, value in results.items() if "1" in str(value)}
    assert {m["step_name"] for m in events[-1]["matches"]} == {"square"}
    assert {m["run_number"] for m in events[-1]["matches"]} == {int(runs.foreach)}
    # The UI encodes the value more than once; quotes ask for the whole value.
    exact = search(stack, "ForeachFlow", runs.foreach, "key=result&value=" + quote(quote('"1"', safe=""), safe=""))
    assert found(exact) == {task for task, value in results.items() if value == 1}
    assert found(search(stack, "ForeachFlow", runs.foreach, "key=result&value=nothing-like-it")) == set()


def test_without_a_value_every_task_with_the_artifact_matches(stack: Stack, api: Api, runs: Runs) -> None:
    events = search(stack, "ForeachFlow", runs.foreach, "key=result", path="/flows/{f}/runs/{r}/search")
    assert [event["type"] for event in events] == ["result"]
    assert found(events) == set(square_tasks(api, runs))


def test_a_foreach_variable_finds_its_task(stack: Stack, api: Api, runs: Runs) -> None:
    results = square_tasks(api, runs)
    events = search(stack, "ForeachFlow", runs.foreach, "key=items&value=3&scope=FOREACH_VARIABLE")
    assert [event["type"] for event in events] == ["result"]
    assert found(events) == {task for task, value in results.items() if value == 9}
    both = search(stack, "ForeachFlow", runs.foreach, "key=items&value=3&scope=ARTIFACT,FOREACH_VARIABLE")
    assert [event["type"] for event in both] == ["progress", "result", "result"]
    # The `items` list ([0, 1, 2, 3, 4]) is an artifact of start and of every square task too.
    assert set(results) <= found(both) and found(events) < found(both)


@pytest.mark.parametrize(("query", "words"), [
    ("value=1", "key is required"),
    ("key=result&scope=EVERYTHING", "scope must be"),
    ("key=" + "k" * 300, "key"),
])
def test_a_bad_search_gets_an_error_event_and_the_socket_closes(stack: Stack, runs: Runs, query: str, words: str) -> None:
    events = search(stack, "ForeachFlow", runs.foreach, query)
    assert len(events) == 1 and events[0]["type"] == "error" and words in events[0]["message"], events
