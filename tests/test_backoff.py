"""Backoff bookkeeping: doubling delays up to the cap, due times, and the reset."""

from __future__ import annotations

from mfcolab.supervisor.backoff import Backoff


def test_backoff_failed_doubles_up_to_the_cap() -> None:
    backoff = Backoff(first=5.0, cap=60.0)
    assert [backoff.failed(100.0) for _ in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert backoff.failures == 6 and backoff.retry_at == 160.0


def test_backoff_due_only_after_the_delay() -> None:
    backoff = Backoff(first=1.0, cap=60.0)
    assert backoff.due(0.0), "nothing failed yet: due at once"
    backoff.failed(10.0)
    assert not backoff.due(10.5)
    assert backoff.due(11.0)


def test_backoff_reset_returns_the_count_and_starts_over() -> None:
    backoff = Backoff(first=2.0, cap=60.0)
    backoff.failed(0.0)
    backoff.failed(0.0)
    assert backoff.reset() == 2
    assert backoff.failures == 0 and backoff.due(0.0)
    assert backoff.failed(0.0) == 2.0
