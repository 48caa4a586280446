"""Capped exponential backoff: how many attempts failed in a row and when the next one is due.

One bookkeeping for every retry loop (component restarts, the mirror's cycles, routine bases).
The caller owns the clock: it passes `now` in, so a test drives the schedule without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    first: float  # seconds before the retry after the first failure
    cap: float  # never wait longer than this
    failures: int = 0  # in a row
    retry_at: float = 0.0

    def failed(self, now: float) -> float:
        """Count a failure; return the delay before the next attempt."""
        self.failures += 1
        delay = min(self.cap, self.first * 2.0 ** (self.failures - 1))
        self.retry_at = now + delay
        return delay

    def reset(self) -> int:
        """Forget the failures (an attempt succeeded); return how many there were."""
        failures, self.failures, self.retry_at = self.failures, 0, 0.0
        return failures

    def due(self, now: float) -> bool:
        return now >= self.retry_at
