"""`mfcolab down`: stop the stack in reverse order, then a final snapshot."""

from __future__ import annotations

import typer

from .console import run, say, settings
from .options import Local, Root


def down(root: Root = None, local: Local = None) -> None:
    """Stop the stack: tunnel and service first, Postgres last, then a final snapshot."""
    from ..supervisor import control

    s = settings(root, local)
    if run(lambda: control.down(s, progress=say)):
        typer.echo("stopped")
    else:
        typer.echo(f"nothing is running for {s.local}")
