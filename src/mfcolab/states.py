"""The one vocabulary of component states. Depends on nothing but the standard library."""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    STOPPED = "stopped"  # never started, or stopped on purpose
    STARTING = "starting"  # spawned, not yet healthy
    RUNNING = "running"  # healthy
    BACKOFF = "backoff"  # died; waiting before the next start
    STOPPING = "stopping"  # asked to stop, waiting for it to exit
    FATAL = "fatal"  # died too often too quickly; no more restarts
    DISABLED = "disabled"  # not part of this stack (for example --no-tunnel)


STOPPED_STATES = frozenset({State.STOPPED, State.FATAL, State.DISABLED})
RUNNING_STATES = frozenset({State.RUNNING, State.STARTING, State.BACKOFF})
