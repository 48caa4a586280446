"""Routes for cards: a task's list, one card's HTML, a live card's data.

Cards are read where `metaflow.cards.get_cards` reads them, under the task's ds-root:
`<ds-root>/mf.cards/<flow>/runs/<run>/steps/<step>/tasks/<task>/cards/<type>-[<id>-]<hash>.html`,
and the data of a live card in the sibling `runtime/` folder as `...<hash>.data.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..service.http import ApiError, endpoint, json_text
from . import envelope
from .context import context
from .taskfiles import locate

CARD_MAX = 64 * 1024 * 1024
DATA_MAX = 16 * 1024 * 1024


@dataclass(frozen=True)
class CardName:
    type: str
    id: str | None
    hash: str


def card_name(file_name: str, suffix: str) -> CardName | None:
    """`<type>-<hash>.<suffix>` or `<type>-<id>-<hash>.<suffix>`; None for any other file."""
    if not file_name.endswith("." + suffix):
        return None
    parts = file_name[: -len(suffix) - 1].split("-")
    if len(parts) == 2 and all(parts):
        return CardName(parts[0], None, parts[1])
    if len(parts) == 3 and parts[0] and parts[2]:
        return CardName(parts[0], parts[1], parts[2])
    return None


def _cards(request: web.Request, folder: Path, suffix: str) -> list[tuple[CardName, str]]:
    found = []
    for name in context(request).roots.list_files(folder):
        card = card_name(name, suffix)
        if card is not None:
            found.append((card, name))
    return found


def _find(request: web.Request, folder: Path, suffix: str, card_hash: str) -> Path:
    for info, name in _cards(request, folder, suffix):
        if info.hash == card_hash:
            return folder / name
    raise ApiError(404, f"no card {card_hash[:80]!r} for this task")


@endpoint
async def card_list(request: web.Request) -> web.Response:
    files = await locate(request)
    cards = [{"id": info.id, "type": info.type, "hash": info.hash}
             for info, _ in _cards(request, files.cards_base / "cards", "html")]
    return envelope.listing(request, json.dumps(cards), 1, False)


@endpoint
async def card_html(request: web.Request) -> web.Response:
    files = await locate(request)
    path = _find(request, files.cards_base / "cards", "html", request.match_info["card_hash"])
    body = context(request).roots.read(path, CARD_MAX)
    if body is None:
        raise ApiError(404, "the card is not readable")
    return web.Response(body=body, content_type="text/html", charset="utf-8")


@endpoint
async def card_data(request: web.Request) -> web.Response:
    files = await locate(request)
    card_hash = request.match_info["card_hash"]
    path = _find(request, files.cards_base / "runtime", "data.json", card_hash)
    body = context(request).roots.read(path, DATA_MAX)
    try:
        data = json.loads(body) if body is not None else None
    except ValueError:
        data = None
    if data is None:
        raise ApiError(404, "the card's data is not readable yet")
    return json_text(json.dumps({"id": card_hash, "data": data}))
