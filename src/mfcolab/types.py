"""Type aliases shared across modules. Depends on nothing but the standard library."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]  # one line per phase of a long operation ("starting postgres")
Clock = Callable[[], float]  # seconds; time.time in the product, a fake in tests
