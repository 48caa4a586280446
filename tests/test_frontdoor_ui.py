"""The front door with `--ui native`: an in-process UI API mounted at /api beside the bundle at /,
and the scheme of the browser's request believed only from a proxy on this machine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest
import requests
from aiohttp import web

from frontdoor_helpers import INDEX_HTML, KEY, ServerThread, door_on, metadata_subapp, non_loopback_address, with_key
from mfcolab.web.auth import COOKIE
from mfcolab.web.frontdoor import create_app


def ui_api() -> web.Application:
    """A small in-process stand-in for mfcolab's UI API (the real one is tested in tests/ui/)."""

    async def features(request: web.Request) -> web.Response:
        return web.json_response({"FEATURE_ARTIFACT_TABLE": True})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket_ = web.WebSocketResponse()
        await socket_.prepare(request)
        async for message in socket_:
            if message.type is aiohttp.WSMsgType.TEXT and message.data == "__ping__":
                await socket_.send_str("__pong__")
        return socket_

    app = web.Application()
    app.router.add_get("/features", features)
    app.router.add_get("/ws", ws)
    return app


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = tmp_path_factory.mktemp("bundle")
    (bundle / "static" / "js").mkdir(parents=True)
    (bundle / "index.html").write_text(INDEX_HTML)
    (bundle / "static" / "js" / "main.1.js").write_text("console.log('ui');")
    servers = ServerThread()
    yield servers.serve(create_app(KEY, metadata_subapp(), api=ui_api(), static_dir=bundle))
    servers.close()


def test_the_ui_api_answers_in_process_at_api(door: str) -> None:
    assert requests.get(f"{door}/api/features", headers=with_key(), timeout=10).json() == {"FEATURE_ARTIFACT_TABLE": True}
    refused = requests.get(f"{door}/api/features", timeout=10)
    assert refused.status_code == 401 and "access key" in refused.json()["message"]


@pytest.mark.parametrize("path", ["/api/nowhere", "/api", "/api/", "/metadata/nowhere", "/metadata"])
def test_an_unknown_service_path_is_a_json_404_not_the_ui(door: str, path: str) -> None:
    answer = requests.get(door + path, headers=with_key(Accept="text/html,*/*"), timeout=10)
    assert answer.status_code == 404, path
    assert answer.json()["status"] == 404
    assert "METAFLOW_SERVICE" not in answer.text


@pytest.mark.parametrize("path", ["/", "/HelloFlow/3", "/HelloFlow/3/start/1", "/apis", "/metadatax/y"])
def test_deep_links_get_the_ui(door: str, path: str) -> None:
    answer = requests.get(door + path, headers=with_key(), timeout=10)
    assert answer.status_code == 200 and 'window.METAFLOW_SERVICE="/api"' in answer.text, path


def test_the_ui_websocket_needs_the_key_or_the_cookie(door: str) -> None:
    with requests.Session() as browser:
        signed_in = browser.post(f"{door}/login", data={"key": KEY}, allow_redirects=False)
        assert signed_in.status_code == 303
        cookie = browser.cookies[COOKIE]

    async def ping(headers: dict[str, str]) -> str:
        async with aiohttp.ClientSession() as session, session.ws_connect(
            door.replace("http://", "ws://") + "/api/ws", headers=headers
        ) as ws:
            await ws.send_str("__ping__")
            return str((await ws.receive(timeout=10)).data)

    assert asyncio.run(ping({"Cookie": f"{COOKIE}={cookie}"})) == "__pong__"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        asyncio.run(ping({}))
    assert refused.value.status == 401


# ---------------------------------------------------------------- forwarded scheme


def cookie_attributes(answer: requests.Response) -> list[str]:
    return [part.strip().lower() for part in answer.headers["Set-Cookie"].split(";")]


@pytest.mark.parametrize("claim", [{"X-Forwarded-Proto": "https"}, {"Cf-Visitor": '{"scheme":"https"}'}])
def test_forwarded_scheme_is_believed_only_from_this_machine(claim: dict[str, str]) -> None:
    address = non_loopback_address()
    with door_on(address) as remote_door:
        answer = requests.post(f"{remote_door}/login", data={"key": KEY}, headers=claim, allow_redirects=False,
                               timeout=10)
        assert answer.status_code == 303
        assert "secure" not in cookie_attributes(answer)  # a remote client's claim
    with door_on("127.0.0.1") as local_door:
        answer = requests.post(f"{local_door}/login", data={"key": KEY}, headers=claim, allow_redirects=False,
                               timeout=10)
        assert "secure" in cookie_attributes(answer)  # cloudflared or Colab's port proxy

