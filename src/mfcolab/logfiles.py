"""The stack's log files: private, bounded in size, and not flooded by one error repeated.

    open_log(path)        append-only, created 0600 (and made 0600 if it was not)
    rotate_if_large(...)  copy-and-truncate rotation: <log> -> <log>.1 -> ... -> <log>.<backups>
    RepeatedErrors        a logging filter: the same error keeps its traceback only once a minute

Children (Postgres, cloudflared, the web process) write to an inherited O_APPEND descriptor
that the supervisor cannot reopen for them, so rotation copies the file aside and truncates it
in place; their next write lands at the new end. A few lines written between the copy and the
truncation can be lost, never the file.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import IO

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
REPEAT_WINDOW = 60.0
_SEEN = "mfcolab_repeat_checked"


def open_log(path: Path) -> IO[bytes]:
    """`path` opened for appending, with mode 0600 whether it is new or not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def make_private(path: Path) -> None:
    """Create `path` empty if missing; either way leave it 0600 (pid and lock files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def rotate_if_large(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> bool:
    """Rotate `path` when it is larger than `max_bytes`; True when it did."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for number in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{number + 1}"))
    first = path.with_name(f"{path.name}.1")
    with open(path, "rb") as source, open_log(first) as copy:
        copy.truncate(0)
        shutil.copyfileobj(source, copy)
    os.truncate(path, 0)
    return True


class RepeatedErrors(logging.Filter):
    """Drops the traceback of an error that was logged with one in the last `window` seconds
    (same logger, message and exception type), and says how often it was cut meanwhile."""

    def __init__(self, window: float = REPEAT_WINDOW) -> None:
        super().__init__()
        self.window = window
        self._last: dict[tuple[str, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[0] is None or getattr(record, _SEEN, False):
            return True
        setattr(record, _SEEN, True)  # one filter on several handlers judges each record once
        signature = (record.name, str(record.msg), record.exc_info[0].__qualname__)
        now = time.monotonic()
        shown_at, cut = self._last.get(signature, (float("-inf"), 0))
        if now - shown_at < self.window:
            self._last[signature] = (shown_at, cut + 1)
            record.exc_info, record.exc_text = None, None
            record.msg = f"{record.msg} (again: {signature[2]}; its traceback is shown once a minute)"
            return True
        if len(self._last) > 1000:
            self._last.clear()
        if cut:
            record.msg = f"{record.msg} ({cut} more like it since the last traceback)"
        self._last[signature] = (now, 0)
        return True


def quiet_repeated_errors(logger: logging.Logger | None = None) -> RepeatedErrors:
    """Put one RepeatedErrors filter on every handler of `logger` (the root logger by default)."""
    repeated = RepeatedErrors()
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(repeated)
    return repeated
