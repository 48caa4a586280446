"""`mfcolab status`: every component with its state, as text or JSON; exit code 3 when nothing runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .console import run, settings
from .options import Local, Root


def status(root: Root = None, local: Local = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every component with its state, pid, port and health; the URL; the snapshots."""
    from ..supervisor import stack
    from ..supervisor.status_view import render

    report = run(lambda: stack.status(settings(root, local)))
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))
    if not report["running"]:
        raise typer.Exit(3)
