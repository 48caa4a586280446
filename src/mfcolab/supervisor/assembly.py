"""What a stack is made of for given settings: `build_components(settings)`, in start order.

    postgres                    always (with the mirror's archive options)
    metadata, ui-backend        containers, for --engine official / --ui official
    web                         the front door and the native service
    tunnel                      unless --no-tunnel

`up` builds them to check and fetch in the foreground (`preflight()`, `fetch(progress)`);
`serve` builds them to run (the supervisor). Building starts nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import credentials
from ..containers import official
from ..postgres import Postgres
from ..replica.mirror import archive_options
from ..settings import Settings
from ..tunnel import TunnelComponent
from ..web.component import WebComponent, database_dsn
from .component import Component


def _no_url(url: str) -> None:
    """Where a tunnel's URL goes when nobody publishes it (`up` only checks the components)."""


def build_components(settings: Settings, on_url: Callable[[str], None] = _no_url) -> list[Component]:
    postgres = Postgres(settings, credentials.db_password(settings), archive_options(settings))
    components: list[Component] = [postgres]
    components += official.components(settings, database_dsn(settings))  # as the service's role
    components.append(WebComponent(settings))
    if settings.tunnel:
        components.append(TunnelComponent(settings, on_url=on_url))
    return components


def postgres_of(components: list[Component]) -> Postgres:
    for component in components:
        if isinstance(component, Postgres):
            return component
    raise LookupError("a stack always has a postgres component")
