"""`mfcolab serve`: the supervisor in the foreground (what `up` starts detached)."""

from __future__ import annotations

import typer

from .. import logsetup
from .console import run
from .options import StackOptions


def serve(options: StackOptions) -> None:
    """Run the supervisor in the foreground (what `up` starts detached)."""
    from ..supervisor import stack

    logsetup.for_service()
    s = options.settings()
    raise typer.Exit(run(lambda: stack.serve(s)))
