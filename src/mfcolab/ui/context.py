"""What every UI route shares: the database, the datastore, the value reader, the settings,
the running tasks' logs."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from ..service.database import Database
from ..service.livelogs import LogSpool
from ..settings import Settings
from .datastore import DatastoreRoots
from .values import ValueReader


@dataclass
class Context:
    settings: Settings
    database: Database
    roots: DatastoreRoots
    values: ValueReader
    spool: LogSpool = field(default_factory=LogSpool)  # running tasks' logs, sent by their runtime


CONTEXT_KEY = web.AppKey("mfcolab_ui_context", Context)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT_KEY]
