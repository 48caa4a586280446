"""Logging configuration, set up only by the entry points (the CLI, `serve`, the web process,
the relay); library modules only call `logging.getLogger(__name__)`."""

from __future__ import annotations

import logging

from .logfiles import quiet_repeated_errors

CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
SERVICE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def for_console(verbose: bool) -> None:
    """An interactive command: warnings only (everything with --verbose), without timestamps."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=CONSOLE_FORMAT)


def for_service() -> None:
    """A long-running process writing its log file: INFO with timestamps, replacing any earlier
    setup, and a repeated error's traceback only once a minute."""
    logging.basicConfig(level=logging.INFO, format=SERVICE_FORMAT, force=True)
    quiet_repeated_errors()
