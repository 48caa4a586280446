"""The Metaflow UI's files at `/`: the bundle as it is, index.html with the service URL injected,
and index.html for any other path (the UI's client-side routes), except under /static/ and the
services' prefixes (/api, /metadata), where a missing path is a JSON 404. No path leaves the bundle."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from ..errors import ConfigError
from .auth import json_error

UI_SERVICE_PATH = "/api"  # where the UI finds its service: the door's own /api

# First path segments that belong to the services, never to the UI's client-side routes.
_SERVICE_SEGMENTS = frozenset({"api", "metadata"})


class StaticUI:
    """The metaflow-ui bundle at /: files as they are, index.html with the service URL injected
    (and, with mfcolab's UI backend, `live_logs`, the faster poll of a running task's log),
    and index.html for any other path (client-side routes), except under /static/ and the
    services' prefixes, where a missing path is a JSON 404."""

    def __init__(self, root: Path, service_url: str = UI_SERVICE_PATH, *, live_logs: bool = False) -> None:
        self.root = root.resolve()
        index = self.root / "index.html"
        if not index.is_file():
            raise ConfigError(
                f"the UI bundle at {root} has no index.html", "point it at an unpacked metaflow-ui release"
            )
        page = inject_service_url(index.read_text(encoding="utf-8"), service_url)
        self.index = (inject_head_script(page, LOG_POLL_SCRIPT) if live_logs else page).encode()

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/{tail:.*}", self.serve)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        relative = request.match_info["tail"]
        if relative in ("", "index.html"):
            return self._index()
        path = self._file(relative)
        if path is not None:
            return web.FileResponse(path)
        if relative.startswith("static/"):
            return json_error(404, f"no such file in the UI bundle: /{relative}")
        if relative.split("/", 1)[0] in _SERVICE_SEGMENTS:
            return json_error(404, f"no such path: /{relative}")
        return self._index()

    def _file(self, relative: str) -> Path | None:
        """The bundle file at `relative`, or None when absent or outside the bundle."""
        if "\x00" in relative:
            return None
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def _index(self) -> web.Response:
        response = web.Response(body=self.index, content_type="text/html", charset="utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return response


# The UI asks for a running task's log every 20 s, its only 20-second timer; mfcolab's UI backend
# has the log while the task runs (service/livelogs.py), so the page asks every 2 s instead.
LOG_POLL_SCRIPT = (
    "<script>(function(){var stock=window.setTimeout;window.setTimeout=function(){"
    "var args=Array.prototype.slice.call(arguments);if(args[1]===20000){args[1]=2000;}"
    "return stock.apply(window,args);};})();</script>"
)


def inject_service_url(index_html: str, service_url: str) -> str:
    """index.html with `window.METAFLOW_SERVICE` set, placed just before </head>."""
    return inject_head_script(index_html, f"<script>window.METAFLOW_SERVICE={json.dumps(service_url)};</script>")


def inject_head_script(index_html: str, script: str) -> str:
    """index.html with `script` placed just before </head> (first, without a head)."""
    at = index_html.lower().find("</head>")
    if at < 0:
        return script + index_html
    return index_html[:at] + script + index_html[at:]
