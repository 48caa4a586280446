"""`mfcolab logs`: the last lines of one component's log (or of all), or follow one."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import ConfigError
from .console import fail, settings
from .options import Local, Root


def logs(component: Annotated[Optional[str], typer.Argument(help="postgres, web, tunnel, supervisor, ...")] = None,
         root: Root = None, local: Local = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n")] = 50) -> None:
    """Print a component's log (all of them, briefly, without COMPONENT)."""
    from ..supervisor import control
    from ..supervisor.process import tail_file

    s = settings(root, local)
    available = control.component_logs(s)
    if component is None and not follow:
        for name, path in available.items():
            typer.echo(f"==> {name} ({path})")
            typer.echo(tail_file(path, lines))
        return
    name = component or "supervisor"
    if name not in available:
        fail(ConfigError(f"no log for {name!r}", f"one of: {', '.join(available) or 'none yet'}"))
    try:
        for line in control.follow(available[name], lines) if follow else tail_file(available[name], lines).splitlines():
            typer.echo(line)
    except KeyboardInterrupt:
        pass
