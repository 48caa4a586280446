"""`/ws`: the UI's live-update socket (contract Part A §4).

Text frames in: `__ping__` (answered `__pong__`), `{"type": "SUBSCRIBE", "uuid", "resource",
"since"?}`, `{"type": "UNSUBSCRIBE", "uuid"}`. Out: events `{type, uuid, resource, data}`
from the `Hub`, and `{"type": "ERROR", "uuid"?, "message"}` for a message that cannot be
used (the socket stays open). Each socket has its own bounded outbox written by its own task:
a socket that does not keep up is closed, and never holds back the others. A peer that has
stopped reading cannot take a close frame either: it gets `CLOSE_WAIT` seconds, then its
connection is aborted, so neither its tasks nor the frames it never read stay behind.

`LiveUpdates` starts and stops the pieces with the application: the hub, the Postgres
listener, the heartbeat timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from ..service.database import Database
from ..service.http import ApiError, message
from .live import Hub, Listener, Subscription
from .liveness import Liveness
from .notify import NotifyConnection

OUTBOX_MAX = 10_000  # frames waiting for a slow socket before it is closed
CLOSE_WAIT = 5.0  # seconds a socket closed for falling behind gets to take its close frame
SUBSCRIPTIONS_MAX = 500  # per socket (a run page makes about ten)
UUID_MAX = 100
MESSAGE_MAX = 64 * 1024


class LiveUpdates:
    def __init__(self, database: Database) -> None:
        self.hub = Hub(database)
        self.liveness = Liveness(database, self.hub.publish)
        self.hub.watch(self.liveness.saw)
        self.notify = NotifyConnection(database.dsn, self.hub.publish, self.liveness.watch_running_runs)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self.hub.run()), asyncio.create_task(self.notify.run())]
        yield
        self.liveness.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


LIVE_KEY = web.AppKey("mfcolab_ui_live", LiveUpdates)


async def websocket(request: web.Request) -> web.StreamResponse:
    socket = web.WebSocketResponse(heartbeat=30, max_msg_size=MESSAGE_MAX)
    if not socket.can_prepare(request).ok:
        return message(400, "this route takes a WebSocket upgrade")
    await socket.prepare(request)
    hub = request.app[LIVE_KEY].hub
    outbox: asyncio.Queue[str] = asyncio.Queue(OUTBOX_MAX)
    writer = asyncio.create_task(_write(socket, outbox))
    closing: list[asyncio.Task[None]] = []

    def send(frame: dict[str, Any]) -> None:
        try:
            outbox.put_nowait(json.dumps(frame))
        except asyncio.QueueFull:
            # The writer is not cancelled: it waits on the transport's drain future, which
            # aiohttp shares with the close below, so a cancel would fail that close at once.
            hub.listeners.discard(listener)
            if not closing:
                closing.append(asyncio.create_task(_close_or_drop(socket, request.transport)))

    listener = Listener(send)
    hub.listeners.add(listener)
    try:
        async for frame in socket:
            if writer.done():
                break
            if frame.type != WSMsgType.TEXT:
                continue
            if frame.data == "__ping__":
                send_text(outbox, "__pong__")
                continue
            try:
                await _handle(hub, listener, frame.data)
            except ApiError as exc:
                send({"type": "ERROR", "uuid": _uuid_of(frame.data), "message": exc.message})
    finally:
        hub.listeners.discard(listener)
        for task in closing:
            await task
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await socket.close()
    return socket


def send_text(outbox: asyncio.Queue[str], text: str) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        outbox.put_nowait(text)


async def _write(socket: web.WebSocketResponse, outbox: asyncio.Queue[str]) -> None:
    try:
        while True:
            await socket.send_str(await outbox.get())
    except (ConnectionError, RuntimeError):
        pass


async def _close_or_drop(socket: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
    """Close with 1013 if the peer takes the close frame within CLOSE_WAIT, else abort the
    connection: a graceful close of a peer that reads nothing keeps the connection, and every
    frame queued for it, until it reads again, which a dead tab never does."""
    try:
        async with asyncio.timeout(CLOSE_WAIT):
            await socket.close(code=1013, message=b"too slow: events were dropped")
    except TimeoutError:
        if transport is not None:
            transport.abort()


async def _handle(hub: Hub, listener: Listener, text: str) -> None:
    try:
        body = json.loads(text)
    except ValueError:
        raise ApiError(400, "a message is __ping__ or a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "a message is __ping__ or a JSON object")
    uuid = body.get("uuid")
    if not isinstance(uuid, str) or not 0 < len(uuid) <= UUID_MAX:
        raise ApiError(400, f"uuid must be a string of 1 to {UUID_MAX} characters")
    kind = body.get("type")
    if kind == "UNSUBSCRIBE":
        listener.subscriptions.pop(uuid, None)
    elif kind == "SUBSCRIBE":
        await _subscribe(hub, listener, uuid, body)
    else:
        raise ApiError(400, "type must be SUBSCRIBE or UNSUBSCRIBE")


async def _subscribe(hub: Hub, listener: Listener, uuid: str, body: dict[str, Any]) -> None:
    resource, since = body.get("resource"), body.get("since")
    if not isinstance(resource, str):
        raise ApiError(400, "resource must be a string")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
        raise ApiError(400, "since must be a number of seconds since the epoch")
    if uuid not in listener.subscriptions and len(listener.subscriptions) >= SUBSCRIPTIONS_MAX:
        raise ApiError(400, f"at most {SUBSCRIPTIONS_MAX} subscriptions per connection")
    subscription = Subscription.parse(uuid, resource)
    listener.subscriptions[uuid] = subscription
    if since is not None and subscription.live is not None:
        await hub.replay(listener, subscription, float(since))


def _uuid_of(text: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        uuid = json.loads(text).get("uuid")
        return uuid if isinstance(uuid, str) and len(uuid) <= UUID_MAX else None
    return None
