"""Checking what a caller sends: path segments, run and task keys, JSON bodies.

Everything that reaches SQL passes through here, so every value is text Postgres can store
(no NUL, valid UTF-8, at most 255 characters for the VARCHAR(255) columns) and every number
fits its column. A refusal is an `ApiError` with a message naming the offending field.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .http import ApiError

NAME_MAX = 255
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
SMALLINT_MAX = 2**15 - 1
# Tags: Metaflow's own client allows 500 characters and 50 user tags; every task row repeats
# its run's tags, so one huge tag would make a step's task list too large to build.
TAG_MAX = 500
TAGS_MAX = 100

# No stored row has this key: a number too large for its column can only mean "not found".
MISSING_NUMBER = -1


def check_text(value: str, what: str, limit: int | None = NAME_MAX) -> str:
    if limit is not None and len(value) > limit:
        raise ApiError(400, f"{what} is longer than {limit} characters")
    if "\x00" in value:
        raise ApiError(400, f"{what} contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, f"{what} is not valid UTF-8 text") from None
    return value


def check_name(value: str, what: str) -> str:
    """A name that becomes part of a pathspec: text, non-empty, without '/'."""
    check_text(value, what)
    if not value or "/" in value:
        raise ApiError(400, f"{what} must be non-empty and must not contain '/'")
    return value


def is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Key:
    """A run or task as named in a path: a sequence number, or an external string id."""

    numeric: bool
    value: int | str


def _key(raw: str, what: str, maximum: int) -> Key:
    check_text(raw, what)
    if is_number(raw):
        number = int(raw)
        return Key(True, number if number <= maximum else MISSING_NUMBER)
    return Key(False, raw)


def run_key(raw: str) -> Key:
    """`{run_number}`: digits match runs_v3.run_number, anything else matches run_id."""
    return _key(raw, "run_number", INT4_MAX)


def task_key(raw: str) -> Key:
    """`{task_id}`: digits match tasks_v3.task_id, anything else matches task_name."""
    return _key(raw, "task_id", INT8_MAX)


def attempt_number(raw: str) -> int:
    check_text(raw, "attempt")
    if not is_number(raw):
        raise ApiError(400, "attempt must be a non-negative integer")
    number = int(raw)
    return number if number <= SMALLINT_MAX else MISSING_NUMBER


def path_text(request_match: Mapping[str, str], name: str) -> str:
    return check_text(request_match[name], name)


@dataclass(frozen=True, slots=True)
class PathIds:
    """The objects a route's path names, checked. Every statement takes them, as far as the path
    goes, as its first parameters: $1 flow_id, $2 run key, $3 step_name, $4 task key."""

    flow_id: str
    run: Key | None = None
    step_name: str | None = None
    task: Key | None = None

    @property
    def params(self) -> tuple[Any, ...]:
        values: list[Any] = [self.flow_id]
        if self.run is not None:
            values.append(self.run.value)
        if self.step_name is not None:
            values.append(self.step_name)
        if self.task is not None:
            values.append(self.task.value)
        return tuple(values)

    @property
    def parent(self) -> PathIds:
        """The object one level up (a task's step, a step's run, a run's flow)."""
        if self.task is not None:
            return dataclasses.replace(self, task=None)
        if self.step_name is not None:
            return dataclasses.replace(self, step_name=None)
        return dataclasses.replace(self, run=None)

    def __str__(self) -> str:
        """For messages: "step S of run R of flow F", as deep as the path goes."""
        named = [("task", self.task.value if self.task else None), ("step", self.step_name),
                 ("run", self.run.value if self.run else None), ("flow", self.flow_id)]
        return " of ".join(f"{kind} {value}" for kind, value in named if value is not None)


def path_ids(match: Mapping[str, str]) -> PathIds:
    return PathIds(
        path_text(match, "flow_id"),
        run_key(match["run_number"]) if "run_number" in match else None,
        path_text(match, "step_name") if "step_name" in match else None,
        task_key(match["task_id"]) if "task_id" in match else None,
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def body_text(raw: bytes) -> str:
    """The request body as text: UTF-8, or a 400."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text") from None


def parse_json(raw: bytes | str) -> Any:
    """The decoded body (strict JSON: no NaN or Infinity); an empty body counts as absent (None)."""
    text = body_text(raw) if isinstance(raw, bytes) else raw
    if not text.strip():
        return None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None


def as_object(doc: Any, what: str = "the request body") -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ApiError(400, f"{what} must be a JSON object")
    return doc


def as_list(doc: Any, what: str = "the request body") -> list[Any]:
    if not isinstance(doc, list):
        raise ApiError(400, f"{what} must be a JSON list")
    return doc


def list_item(value: Any, index: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"item {index} of the list must be a JSON object")
    return value


def opt_text(body: dict[str, Any], field: str, default: str | None = None, limit: int | None = NAME_MAX) -> str | None:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"{field} must be a string")
    return check_text(value, field, limit)


def text_list(body: dict[str, Any], field: str, limit: int | None = TAG_MAX) -> list[str]:
    """A list of strings (tags: at most TAGS_MAX of at most TAG_MAX characters); absent or null is empty."""
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, f"{field} must be a list of strings")
    check_tag_count(value, field)
    for item in value:
        check_text(item, field, limit)
    return value


def check_tag_count(tags: list[str], field: str) -> None:
    if len(tags) > TAGS_MAX:
        raise ApiError(400, f"{field} holds {len(tags)} tags; at most {TAGS_MAX} are allowed")


def tags_json(body: dict[str, Any], field: str) -> str:
    return json.dumps(text_list(body, field))


def check_value(value: Any) -> None:
    """A metadata value: any JSON. A string must be storable text; anything else (the client
    sends `foreach-stack` as a list) is stored as its JSON text."""
    if isinstance(value, str):
        check_text(value, "value", None)


def attempt_id(body: dict[str, Any]) -> int:
    value = body.get("attempt_id", 0)
    if value is None:
        return 0
    if isinstance(value, str) and is_number(value) and len(value) <= 5:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SMALLINT_MAX:
        raise ApiError(400, f"attempt_id must be an integer between 0 and {SMALLINT_MAX}")
    return value
