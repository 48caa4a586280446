"""Dispatch of the /flows/... routes by path shape: one dict lookup per request.

aiohttp indexes dynamic routes by their literal prefix, and every route of this service starts
with /flows/{flow_id}, so its router would try them one regex at a time. Here the path is split
once: in every route, the even segments (flows, runs, steps, tasks, ...) are literal and the odd
ones are values, so the literal segments name the route. Values are percent-decoded per
segment, so an encoded '/' stays inside its segment.
"""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from .http import ApiError, Handler, endpoint, message


class Route:
    __slots__ = ("handler", "names", "fixed")

    def __init__(self, handler: Handler, names: tuple[str, ...], fixed: tuple[tuple[int, str], ...]) -> None:
        self.handler = handler
        self.names = names  # the value name of every odd segment
        self.fixed = fixed  # odd segments that are literal after all (tag/mutate)


def _key(method: str, parts: list[str]) -> tuple[str, int, tuple[str, ...]]:
    return method, len(parts), tuple(parts[0::2])


class ShapeRouter:
    """Routes whose templates start with /flows/: (method, literal segments) -> handler."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, int, tuple[str, ...]], Route] = {}

    def add(self, method: str, template: str, handler: Handler) -> None:
        parts = template.strip("/").split("/")
        if any(part.startswith("{") for part in parts[0::2]):
            raise ValueError(f"{template}: values must sit at odd segments")
        names = tuple(part[1:-1] if part.startswith("{") else "" for part in parts[1::2])
        fixed = tuple((2 * i + 1, part) for i, part in enumerate(parts[1::2]) if not part.startswith("{"))
        methods = (method, "HEAD") if method == "GET" else (method,)
        for verb in methods:
            self._routes[_key(verb, parts)] = Route(handler, names, fixed)

    def find(self, method: str, parts: list[str]) -> tuple[Route, dict[str, str]] | None:
        route = self._routes.get(_key(method, parts))
        if route is None:
            return None
        for index, literal in route.fixed:
            if parts[index] != literal:
                return None
        values = {name: _decode(parts[2 * i + 1]) for i, name in enumerate(route.names) if name}
        return route, values

    def handler(self) -> Handler:
        """The handler of `/flows/{tail:.+}`; the service may be mounted under a prefix."""

        @endpoint
        async def dispatch(request: web.Request) -> web.StreamResponse:
            # "/flows/{tail}" has 2 slashes, "/metadata/flows/{tail}" 3: segments before "flows".
            skip = request.match_info.route.resource.canonical.count("/") - 1  # type: ignore[union-attr]
            parts = request.rel_url.raw_path.split("/")[skip:]
            found = self.find(request.method, parts)
            if found is None:
                return message(404, f"no such route: {request.method} {request.path}")
            route, values = found
            request.match_info.update(values)
            return await route.handler(request)

        return dispatch


def _decode(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise ApiError(400, "a path segment is not valid percent-encoded UTF-8") from None
