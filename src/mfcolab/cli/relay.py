"""`mfcolab relay` (hidden): the relay of `connect --watch` in the foreground, and where it keeps its state."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import logsetup
from .console import run, settings
from .options import Local, RelayPort


def relay(root: Annotated[Path, typer.Option("--root")], relay_port: RelayPort = None,
          folder: Annotated[Optional[Path], typer.Option("--folder")] = None, local: Local = None) -> None:
    """Run the relay of `connect --watch` in the foreground."""
    from ..client import relay as relaying

    logsetup.for_service()
    where = relaying.RelayFolder(folder or relay_folder(local))
    raise typer.Exit(run(lambda: relaying.serve(root.absolute(), relay_port or default_relay_port(), where)))


def relay_folder(local: Path | None) -> Path:
    return settings(None, local).local / "relay"


def default_relay_port() -> int:
    from ..client.relay import DEFAULT_PORT

    return DEFAULT_PORT
