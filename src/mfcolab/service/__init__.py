"""mfcolab's native Metaflow metadata service (the HTTP API of upstream metadata_service 2.5.1)."""

from __future__ import annotations

from .app import create_app
from .http import VERSION

__all__ = ["VERSION", "create_app"]
