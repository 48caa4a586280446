"""The response envelope the UI expects around data (`DataModel<T>` in the UI's types).

List: `{"data": [...], "status": 200, "links": {self, first, prev, next, last},
"pages": {self, first, prev, next, last}, "query": {...}}`; `links.next` and `pages.next` are
null on the last page (a page with fewer rows than `_limit`), and `last` is always null (no
count is run). Links are root-relative (`/api/runs?...`): the browser resolves them against
whatever origin it used (tunnel, Colab's proxy, localhost), so no scheme or host is guessed.
The data is JSON text built by Postgres and is spliced in without being decoded.
"""

from __future__ import annotations

import json

from aiohttp import web

from ..service.http import json_text


def _link(request: web.Request, page: int | None) -> str | None:
    if page is None:
        return None
    return str(request.rel_url.update_query(_page=str(page)))


def _query(request: web.Request) -> dict[str, str]:
    return {name: value for name, value in request.query.items()}


def listing(request: web.Request, data: str, page: int, has_next: bool, last: int | None = None) -> web.Response:
    """A page of a list; `last` is the number of pages when it is known (logs)."""
    pages = {"self": page, "first": 1, "prev": max(page - 1, 1), "next": page + 1 if has_next else None, "last": last}
    links = {name: _link(request, number) for name, number in pages.items()}
    links["self"] = str(request.rel_url)
    rest = json.dumps({"status": 200, "links": links, "pages": pages, "query": _query(request)})
    return json_text('{"data": ' + data + ", " + rest[1:])


def single(request: web.Request, data: str) -> web.Response:
    rest = json.dumps({"status": 200, "links": {"self": str(request.rel_url)}, "query": _query(request)})
    return json_text('{"data": ' + data + ", " + rest[1:])


def missing(request: web.Request, what: str) -> web.Response:
    """404 in the envelope (`data: {}`) with a message, as a single-object route answers it."""
    body = {"data": {}, "status": 404, "message": f"{what} does not exist",
            "links": {"self": str(request.rel_url)}, "query": _query(request)}
    return json_text(json.dumps(body), 404)
