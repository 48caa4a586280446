"""Heartbeats: the 10-second rule, the double-encoded answer, and which clients send them."""

from __future__ import annotations

import json
import re

from aiohttp import web

from .http import json_text

WAIT_SECONDS = 10

# The client does json.loads(response.json()): the body is a JSON string holding JSON.
_BODY = json.dumps(json.dumps({"wait_time_in_seconds": WAIT_SECONDS}))

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def answer(updated: bool) -> web.Response:
    """200 when the heartbeat was recorded; 404 (same body) when it was too recent or the
    object does not exist, as upstream does."""
    return json_text(_BODY, 200 if updated else 404)


def capable(system_tags: list[str]) -> bool:
    """Whether the client that created a run or task sends heartbeats: Metaflow >= 2.2.12
    (>= 1.14.0 on 1.x). A version that does not parse counts as capable; no version tag
    means not capable."""
    for tag in system_tags:
        if tag.startswith("metaflow_version:"):
            match = _VERSION.match(tag[len("metaflow_version:"):])
            if match is None:
                return True
            version = (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
            if version[0] == 1:
                return version >= (1, 14, 0)
            return version >= (2, 2, 12)
    return False
