"""A page of a list resource: parse the list query, run one statement, wrap the envelope."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import envelope, sql
from .context import context
from .query import LIMIT_DEFAULT, LIMIT_MAX, Columns, ListQuery


async def answer(request: web.Request, rows: str, columns: Columns, params: tuple[Any, ...], *,
                 default_order: str, limit_default: int = LIMIT_DEFAULT, limit_max: int = LIMIT_MAX,
                 plain_values: bool = False) -> web.Response:
    query = ListQuery.parse(request.query, columns, len(params) + 1, default_order=default_order,
                            limit_default=limit_default, limit_max=limit_max)
    statement = sql.values_listing(rows, query) if plain_values else sql.listing(rows, query)
    record = await context(request).database.fetchrow(statement, *params, *query.params)
    data, count = (record[0], record[1]) if record is not None else ("[]", 0)  # an aggregate: always one row
    return envelope.listing(request, data, query.page, count >= query.limit)
