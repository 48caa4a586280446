"""Checking what the UI sends in a query string, and the list grammar it speaks.

List routes take `field[:op]=v1,v2` filters (comma = OR; `null` = IS NULL), `_tags` (every
tag present among tags and system_tags; `_tags:any` = at least one), `_order=[+|-]col,...`
(no sign = descending; a `+` decoded as a space is ascending), `_limit` (default 10, at
most 1000), `_page` (from 1), and `_group` with `_group_limit` (pages count groups, each
group holds up to `_group_limit` rows). `ListQuery.parse` turns them into SQL on the
columns of one resource (`Columns`): names are checked against the resource, every value is
a bind parameter, and a refusal is an `ApiError` 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..service.http import ApiError
from ..service.inputs import INT8_MAX, check_text

LIMIT_DEFAULT = 10
LIMIT_MAX = 1000
PAGE_MAX = 1_000_000
OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "co", "sw", "ew", "li", "is", "re")
_COMPARE = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


@dataclass(frozen=True)
class Columns:
    """The filterable and sortable columns of a resource: name -> 'int' | 'text' | 'bool'.
    `key` orders ties so that pages never overlap."""

    kinds: Mapping[str, str]
    key: tuple[str, ...]
    groups: tuple[str, ...] = ()
    tags: bool = True


@dataclass
class ListQuery:
    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    order: str = ""
    limit: int = LIMIT_DEFAULT
    page: int = 1
    group: str | None = None
    group_limit: int = LIMIT_DEFAULT
    first: int = 1  # the number of the first parameter this query binds

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${self.first + len(self.params) - 1}"

    @classmethod
    def parse(cls, query: Mapping[str, str], columns: Columns, first: int, *,
              default_order: str, limit_default: int = LIMIT_DEFAULT, limit_max: int = LIMIT_MAX) -> ListQuery:
        parsed = cls(first=first)
        parsed.limit = number(query, "_limit", limit_default, 1, limit_max)
        parsed.page = number(query, "_page", 1, 1, PAGE_MAX)
        parsed.order = parsed._order(query.get("_order") or default_order, columns)
        if query.get("_group"):
            group = query["_group"].strip()
            if group not in columns.groups:
                raise ApiError(400, f"_group must be one of: {', '.join(columns.groups) or 'nothing here'}")
            parsed.group = group
            parsed.group_limit = number(query, "_group_limit", LIMIT_DEFAULT, 1, limit_max)
        for raw_name, raw_value in query.items():
            name, _, op = raw_name.partition(":")
            if name == "_tags" and columns.tags:
                parsed._tags(op, raw_value)
            elif name in columns.kinds:
                parsed._filter(name, op or "eq", raw_value, columns.kinds[name])
        return parsed

    def _order(self, text: str, columns: Columns) -> str:
        check_text(text, "_order", 1000)
        terms = []
        seen = set()
        for raw in text.split(","):
            descending = not raw.startswith(("+", " "))
            name = raw.strip().lstrip("+-").strip()
            if not name:
                continue
            if name not in columns.kinds:
                if name in ("project",):  # the UI offers it; nothing to sort by
                    continue
                raise ApiError(400, f"_order: cannot sort by {name!r}; sortable: {', '.join(sorted(columns.kinds))}")
            if name not in seen:
                seen.add(name)
                terms.append(f'T."{name}" {"DESC" if descending else "ASC"}')
        for name in columns.key:
            if name not in seen:
                terms.append(f'T."{name}" DESC')
        return ", ".join(terms)

    def _tags(self, op: str, value: str) -> None:
        if op not in ("", "all", "any"):
            raise ApiError(400, "_tags takes no operator, :all or :any")
        tags = [check_text(tag, "_tags", None) for tag in value.split(",") if tag]
        if tags:
            self.where.append(f"(T.tags || T.system_tags) {'?|' if op == 'any' else '?&'} {self.bind(tags)}::text[]")

    def _filter(self, name: str, op: str, value: str, kind: str) -> None:
        if op not in OPERATORS:
            raise ApiError(400, f"{name}:{op}: unknown operator; use one of {', '.join(OPERATORS)}")
        check_text(value, name, 10_000)
        column = f'T."{name}"'
        alternatives = [self._condition(column, name, op, item, kind) for item in value.split(",")]
        self.where.append("(" + " OR ".join(alternatives) + ")")

    def _condition(self, column: str, name: str, op: str, item: str, kind: str) -> str:
        if op == "is" or item == "null":
            if item not in ("null", "true", "false"):
                raise ApiError(400, f"{name}:{op}: only null, true or false can be tested with is")
            negate = "NOT " if op == "ne" else ""
            if item == "null":
                return f"{column} IS {negate}NULL"
            if kind != "bool":
                raise ApiError(400, f"{name} is not a true/false field")
            return f"{column} IS {negate}{item.upper()}"
        if op in _COMPARE:
            return f"{column} {_COMPARE[op]} {self.bind(_typed(name, item, kind))}{_CAST[kind]}"
        pattern = {"co": f"%{_escape(item)}%", "sw": f"{_escape(item)}%", "ew": f"%{_escape(item)}", "li": item,
                   "re": item}[op]
        text = column if kind == "text" else f"{column}::text"
        return f"{text} {'~' if op == 're' else 'ILIKE'} {self.bind(pattern)}::text"


_CAST = {"int": "::bigint", "text": "::text", "bool": "::boolean"}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _typed(name: str, item: str, kind: str) -> Any:
    if kind == "int":
        try:
            number_ = int(item)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer, got {item[:50]!r}") from None
        if abs(number_) > INT8_MAX:
            raise ApiError(400, f"{name} is out of range")
        return number_
    if kind == "bool":
        if item.lower() not in ("true", "false"):
            raise ApiError(400, f"{name} must be true or false")
        return item.lower() == "true"
    return item


def number(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; absent or empty means `default`."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise ApiError(400, f"{name} must be an integer between {low} and {high}")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer between {low} and {high}")
    return value


def optional_number(query: Mapping[str, str], name: str, high: int) -> int | None:
    if not query.get(name):
        return None
    return number(query, name, 0, 0, high)


def flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").strip().lower() in ("true", "1", "yes")


def stream_name(raw: str) -> str:
    """`{stream}` in /logs/{stream}: out or err."""
    if raw not in ("out", "err"):
        raise ApiError(404, f"no such log stream {raw[:20]!r}: use out or err")
    return "stdout" if raw == "out" else "stderr"
