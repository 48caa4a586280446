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

# Every move the supervisor may make; anything else is a bug and `Slot.move` refuses it.
ALLOWED_MOVES: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.DISABLED}),
    State.STARTING: frozenset({State.RUNNING, State.BACKOFF, State.FATAL, State.STOPPING, State.STOPPED}),
    State.RUNNING: frozenset({State.BACKOFF, State.FATAL, State.STOPPING, State.STOPPED}),
    State.BACKOFF: frozenset({State.STARTING, State.FATAL, State.STOPPING, State.STOPPED}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.FATAL: frozenset({State.STOPPING, State.STOPPED}),
    State.DISABLED: frozenset(),
}


class TransitionError(RuntimeError):
    """A move the state machine does not allow (a programming error, never a user's)."""

    def __init__(self, name: str, source: State, target: State) -> None:
        super().__init__(f"{name}: {source.value} -> {target.value} is not an allowed move")


def check_move(name: str, source: State, target: State) -> None:
    if target not in ALLOWED_MOVES[source]:
        raise TransitionError(name, source, target)
