"""`mfcolab snapshot`: a snapshot now, and what it shipped as JSON."""

from __future__ import annotations

import json

import typer

from .console import run, say, settings
from .options import Local, Root


def snapshot(root: Root = None, local: Local = None) -> None:
    """Take a snapshot now and print what was shipped."""
    from ..supervisor import control

    typer.echo(json.dumps(run(lambda: control.snapshot_now(settings(root, local), progress=say)), indent=2, default=str))
