"""A Registry v2 stand-in on 127.0.0.1, enough for `udocker pull`.

Serves `GET /v2/`, manifests by tag or digest (HEAD too) with their media type and
Docker-Content-Digest, and blobs. Switches a test can flip while it runs:

- `require_login = (user, password)`: the Bearer token flow. `/v2/` and the v2 routes answer 401
  with `WWW-Authenticate: Bearer realm=.../token,...`; `/token` hands out a token only to a
  request carrying those credentials as Basic auth (anonymous requests get 401 there too).
- `rate_limited = True`: manifests answer 429 TOOMANYREQUESTS, as Docker Hub does.
- `slow_blobs = seconds`: blobs stream in 64 KiB pieces with that pause between them.
- `index_tags = True`: tags answer with a one-platform OCI image index (like multi-arch tags).
A name that was never added answers 404 MANIFEST_UNKNOWN. Every request is counted in `hits`.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from .images import OCI_INDEX, Image, oci_index_for, sha256

CHUNK = 64 * 1024


@dataclass
class Registry:
    images: dict[tuple[str, str], Image] = field(default_factory=dict)
    require_login: tuple[str, str] | None = None
    rate_limited: bool = False
    slow_blobs: float = 0.0
    index_tags: bool = False
    hits: Counter[str] = field(default_factory=Counter)
    _tokens: set[str] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    port: int = 0

    def add(self, repo: str, tag: str, image: Image) -> None:
        self.images[(repo, tag)] = image

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle (a thread with its own event loop) --------------------------------------------

    def start(self) -> Registry:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="registry", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the registry stand-in did not start")
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/", self._root)
        app.router.add_get("/token", self._token)
        app.router.add_route("*", r"/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_route("*", r"/v2/{name:.+}/blobs/{digest}", self._blob)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- handlers ---------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        if self.require_login is None:
            return True
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[7:] in self._tokens

    def _challenge(self, scope: str = "") -> web.Response:
        value = f'Bearer realm="{self.url}/token",service="standin"'
        if scope:
            value += f',scope="{scope}"'
        return _error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": value})

    async def _root(self, request: web.Request) -> web.Response:
        self.hits["root"] += 1
        if not self._authorized(request):
            return self._challenge()
        return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def _token(self, request: web.Request) -> web.Response:
        self.hits["token"] += 1
        expected = self.require_login
        given = request.headers.get("Authorization", "")
        if expected is not None:
            wanted = "Basic " + base64.b64encode(f"{expected[0]}:{expected[1]}".encode()).decode()
            if given != wanted:
                return _error(401, "UNAUTHORIZED", "incorrect username or password")
        token = secrets.token_hex(16)
        self._tokens.add(token)
        return web.json_response({"token": token, "access_token": token, "expires_in": 300})

    async def _manifest(self, request: web.Request) -> web.Response:
        name, reference = request.match_info["name"], request.match_info["reference"]
        self.hits[f"manifest {request.method}"] += 1
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "read-only registry")
        if not self._authorized(request):
            return self._challenge(f"repository:{name}:pull")
        if self.rate_limited:
            return _error(429, "TOOMANYREQUESTS", "You have reached your pull rate limit. "
                          "You may increase the limit by authenticating and upgrading")
        found = self._find_manifest(name, reference)
        if found is None:
            return _error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {name}:{reference}")
        body, media_type = found
        headers = {"Docker-Content-Digest": sha256(body), "Content-Type": media_type}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(body))})
        self.hits["manifest pulls"] += 1
        return web.Response(body=body, headers=headers)

    def _find_manifest(self, name: str, reference: str) -> tuple[bytes, str] | None:
        for (repo, tag), image in self.images.items():
            if repo != name:
                continue
            if reference == tag:
                if self.index_tags:
                    return oci_index_for(image), OCI_INDEX
                return image.manifest, _media_type(image.manifest)
            if reference == image.digest:
                return image.manifest, _media_type(image.manifest)
        return None

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        name, digest = request.match_info["name"], request.match_info["digest"]
        self.hits["blob"] += 1
        if not self._authorized(request):
            return self._challenge(f"repository:{name}:pull")
        blob = next((image.blobs[digest] for (repo, _), image in self.images.items()
                     if repo == name and digest in image.blobs), None)
        if blob is None:
            return _error(404, "BLOB_UNKNOWN", f"blob unknown: {digest}")
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        if request.method == "HEAD" or not self.slow_blobs:
            response = web.Response(body=None if request.method == "HEAD" else blob, headers=headers)
            if request.method == "HEAD":
                response.headers["Content-Length"] = str(len(blob))
            return response
        stream = web.StreamResponse(headers={**headers, "Content-Length": str(len(blob))})
        await stream.prepare(request)
        for start in range(0, len(blob), CHUNK):
            await stream.write(blob[start:start + CHUNK])
            await asyncio.sleep(self.slow_blobs)
        await stream.write_eof()
        return stream


def _media_type(manifest: bytes) -> str:
    import json

    return str(json.loads(manifest).get("mediaType", "application/vnd.docker.distribution.manifest.v2+json"))


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message, "detail": None}]}, status=status,
                             headers=headers)
