"""Responses and the error boundary shared by every route of the metadata service.

Every handler is wrapped by `endpoint`: an `ApiError` becomes its status with a JSON
`{"message": ...}` body, database failures map to the status a Metaflow client acts on
(409 duplicate, 503 database unavailable: the client retries 503), and anything else is a
logged 500 as a last resort.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from asyncpg.exceptions import _base as asyncpg_base

log = logging.getLogger(__name__)

VERSION = "2.5.1"
VERSION_HEADER = "METADATA_SERVICE_VERSION"

_JSON_HEADERS = {"Content-Type": "application/json", VERSION_HEADER: VERSION}
_TEXT_HEADERS = {"Content-Type": "text/plain; charset=utf-8", VERSION_HEADER: VERSION}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Called when the database connection fails, so the pool can replace its connections.
ConnectionLost = Callable[[], Awaitable[None]]
CONNECTION_LOST: web.AppKey[ConnectionLost] = web.AppKey("mfcolab_service_connection_lost")


class ApiError(Exception):
    """A request the service refuses, with the status and the message the caller sees."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_text(text: str, status: int = 200) -> web.Response:
    """A response whose body is already JSON text (most bodies are built by Postgres)."""
    return web.Response(body=text.encode(), status=status, headers=_JSON_HEADERS)


def plain_text(text: str, status: int = 200, *, versioned: bool = True) -> web.Response:
    headers = _TEXT_HEADERS if versioned else {"Content-Type": "text/plain; charset=utf-8"}
    return web.Response(body=text.encode(), status=status, headers=headers)


def message(status: int, text: str) -> web.Response:
    return json_text(json.dumps({"message": text}), status)


def not_found() -> web.Response:
    """What a single-object GET answers when there is no such row: 404 with `{}`."""
    return json_text("{}", 404)


# A value Postgres (class 22) or the driver (argument encoding) rejects: the caller's fault.
_BAD_VALUE = (asyncpg.DataError, asyncpg_base.DataError)

# Errors that mean "the database is not reachable right now": the client retries a 503.
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@web.middleware
async def json_bodies_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body labelled as anything but JSON is refused before any handler parses it: a form or
    text/plain is what a web page can send another site without asking first. An unlabelled
    body is taken (the Metaflow client's heartbeat sends one); the front door's cross-site check
    covers browsers there."""
    labelled = "Content-Type" in request.headers
    if request.body_exists and labelled and request.content_type != "application/json":
        return message(415, f"the request body must be JSON (Content-Type: application/json), not {request.content_type}")
    return await handler(request)


def endpoint(handler: Handler) -> Handler:
    """Turn every failure of `handler` into a JSON error response; never let one escape."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return message(exc.status, exc.message)
        except asyncpg.UniqueViolationError:
            return message(409, "the object already exists")
        except asyncpg.ForeignKeyViolationError:
            return message(404, "the parent object does not exist")
        except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
            return message(409, "conflicting concurrent update, please retry")
        except _BAD_VALUE as exc:
            return message(400, f"invalid value: {exc}")
        except asyncpg.ProgramLimitExceededError as exc:
            return message(400, f"value too large or too deeply nested: {exc}")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return message(exc.status, exc.reason)
        except _UNAVAILABLE as exc:
            log.warning("database unavailable during %s %s: %s", request.method, request.path, exc)
            hook = request.app.get(CONNECTION_LOST)
            if hook is not None:
                await hook()
            return message(503, "the database is unavailable, retry shortly")
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            return message(500, "internal error; the service log has the details")

    return guarded
