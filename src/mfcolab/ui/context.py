"""What every UI route shares: the database, the datastore, the value reader, the settings."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..service.database import Database
from ..settings import Settings
from .datastore import DatastoreRoots
from .values import ValueReader


@dataclass
class Context:
    settings: Settings
    database: Database
    roots: DatastoreRoots
    values: ValueReader


CONTEXT_KEY = web.AppKey("mfcolab_ui_context", Context)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT_KEY]
