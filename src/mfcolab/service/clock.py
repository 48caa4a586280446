"""Server-side timestamps: ts_epoch in milliseconds, heartbeats in seconds."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)


def now_s() -> int:
    return int(time.time())
