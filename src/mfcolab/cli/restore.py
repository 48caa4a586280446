"""`mfcolab restore`: the database rebuilt from the root folder while the stack is down, or
`--list`: each generation's restorable window."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import StackStateError
from .console import run, say, settings
from .options import Local, Root


def restore(root: Root = None, local: Local = None,
            generation: Annotated[Optional[str], typer.Option("--generation", help="Generation to restore [newest].")] = None,
            until: Annotated[Optional[str], typer.Option("--until", help="Recover up to this time: ISO 8601 with an offset, "
                                                         "a local time ('2026-01-31 14:05:00') or a span ago (-10m).")] = None,
            move_aside: Annotated[bool, typer.Option("--move-aside", help="Keep the current database under a new name "
                                                     "(pgdata.before-restore-<time>) instead of refusing.")] = False,
            list_windows: Annotated[bool, typer.Option("--list", help="Show each generation's restorable window; restore nothing.")] = False) -> None:
    """Restore the database from the root folder (the stack must be down)."""
    from ..replica import restore as restoring
    from ..supervisor import control

    s = settings(root, local)
    if list_windows:
        typer.echo("\n".join(restoring.window_lines(run(lambda: restoring.list_generations(s)))))
        return

    def restore_now() -> str:
        if control.supervisor_pid(s) is not None:
            raise StackStateError("the stack is running", "mfcolab down first")
        return restoring.restore(s, generation=generation, until=until, progress=say, move_aside=move_aside)

    typer.echo(run(restore_now))
