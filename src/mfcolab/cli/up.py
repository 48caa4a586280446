"""`mfcolab up`: start the stack detached, wait until it is healthy, print how to connect."""

from __future__ import annotations

import typer

from .console import run, say
from .options import StackOptions


def up(options: StackOptions) -> None:
    """Start the stack detached, wait until it is healthy, print how to connect."""
    from ..supervisor import stack

    s = options.settings()
    status = run(lambda: stack.up(s, root_given=options.root_given, progress=say))
    typer.echo("\n".join(stack.summary_lines(s, status)))
