"""Browser sessions of the front door, kept in <root>/sessions.json so they outlive the web process.

A session id is 32 random bytes, handed to the browser once in the cookie. The file holds only
HMAC(access key, id): reading it grants nothing, and a new key makes every stored session
unmatchable (`mfcolab rotate-key` also empties the file). A session ends after IDLE seconds
without use, after TOTAL seconds in all, or at /logout.

The root folder is writable by every notebook that mounts it, so the file is untrusted input:
anything malformed in it is skipped. It is looked at (one stat: Drive is a FUSE mount) at most
once per CHECK_INTERVAL, and read again only when its size or mtime changed.
Writes are atomic and 0600 (credentials.write_private).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from ..credentials import write_private
from ..sharedfile import read_regular

log = logging.getLogger(__name__)

IDLE = 7 * 24 * 3600
TOTAL = 30 * 24 * 3600
MAX_SESSIONS = 200  # the oldest go first beyond this
MAX_FILE_BYTES = 256 * 1024
SEEN_PRECISION = 3600  # "last used" is written back at most this often per session
CHECK_INTERVAL = 1.0
_FORMAT = 1


def session_digest(key: str, session_id: str) -> str:
    return hmac.new(key.encode("utf-8", "surrogatepass"), session_id.encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()


class SessionStore:
    """Sessions by digest: {digest: (created, last used)}. `path=None` keeps them in memory only."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._sessions: dict[str, tuple[float, float]] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._looked_at = float("-inf")

    def open(self, key: str) -> str:
        """Start a session for a browser that gave `key`; returns the id for its cookie."""
        self._reload()
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        self._sessions[session_digest(key, session_id)] = (now, now)
        self._save()
        return session_id

    def valid(self, key: str, session_id: str) -> bool:
        """True when `session_id` is a live session under `key`; refreshes its last use."""
        if not session_id or len(session_id) > 128:
            return False
        self._reload()
        digest = session_digest(key, session_id)
        found = self._sessions.get(digest)
        if found is None:
            return False
        created, seen = found
        now = self.clock()
        if now - created > TOTAL or now - seen > IDLE:
            del self._sessions[digest]
            self._save()
            return False
        if now - seen > SEEN_PRECISION:
            self._sessions[digest] = (created, now)
            self._save()
        return True

    def close(self, key: str, session_id: str) -> None:
        self._reload()
        if self._sessions.pop(session_digest(key, session_id), None) is not None:
            self._save()

    def clear(self) -> None:
        self._sessions.clear()
        self._save()

    def __len__(self) -> int:
        self._reload()
        return len(self._sessions)

    # -- the file -------------------------------------------------------------------------

    def _reload(self) -> None:
        if self.path is None or time.monotonic() - self._looked_at < CHECK_INTERVAL:
            return
        self._looked_at = time.monotonic()
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._sessions, self._stamp = {}, None
            return
        except OSError as exc:
            log.warning("cannot read %s (%s): keeping the sessions known so far", self.path, exc.strerror)
            return
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._sessions = _parse(self.path, info.st_size, self.clock())

    def _save(self) -> None:
        if self.path is None:
            return
        newest = sorted(self._sessions.items(), key=lambda item: item[1][0], reverse=True)[:MAX_SESSIONS]
        self._sessions = dict(newest)
        body = {"format": _FORMAT, "sessions": {digest: list(times) for digest, times in newest}}
        try:
            write_private(self.path, json.dumps(body) + "\n")
            info = os.stat(self.path)
            self._stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError as exc:
            log.warning("cannot write %s (%s): sessions are kept in memory only", self.path, exc.strerror)


def _parse(path: Path, size: int, now: float) -> dict[str, tuple[float, float]]:
    """The live, well-formed entries of a sessions file; everything else is dropped."""
    if size > MAX_FILE_BYTES:
        log.warning("%s is %d bytes, more than sessions need: ignoring it", path, size)
        return {}
    try:
        data = json.loads(read_regular(path, MAX_FILE_BYTES))
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): no browser sessions", path, type(exc).__name__)
        return {}
    entries = data.get("sessions") if isinstance(data, dict) and data.get("format") == _FORMAT else None
    if not isinstance(entries, dict):
        return {}
    found: dict[str, tuple[float, float]] = {}
    for digest, times in entries.items():
        if not _is_digest(digest) or not isinstance(times, list) or len(times) != 2:
            continue
        created, seen = times
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in times):
            continue
        if created <= now + 60 and created <= seen and now - created <= TOTAL and now - seen <= IDLE:
            found[digest] = (float(created), float(seen))
    return found


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(ch in "0123456789abcdef" for ch in value)
