"""The Typer app: every command registered in the order `--help` lists them, logging set up in
its callback, and main(), the boundary where an unexpected exception becomes one line and exit
code 1 (its traceback goes to the error log that the line names)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import crashlog, logsetup
from ..errors import MfcolabError
from . import connect, down, keys, logs, relay, restore, serve, snapshot, status, up
from .console import error_log_folder, show_error
from .options import stack_command

app = typer.Typer(
    help="A stateful Metaflow metadata service and UI on machines you cannot keep.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,  # help text is plain: "[7860]" is a default, not markup
)


@app.callback()
def _logging(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False) -> None:
    logsetup.for_console(verbose)


app.command("up")(stack_command(up.up))
app.command("serve")(stack_command(serve.serve))
app.command()(down.down)
app.command()(status.status)
app.command()(logs.logs)
app.command()(snapshot.snapshot)
app.command()(restore.restore)
app.command()(keys.key)
app.command("rotate-key")(keys.rotate_key)
app.command()(connect.connect)
app.command(hidden=True)(relay.relay)


def main() -> None:
    """The `mfcolab` command. An unexpected exception ends as one line and exit code 1; its
    traceback goes to the error log that the line names."""
    try:
        app(prog_name="mfcolab")
    except Exception as exc:  # noqa: BLE001 - the boundary for whatever nothing else caught
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
        log = crashlog.record(exc, error_log_folder(), command)
        show_error(MfcolabError(*crashlog.explain(exc, command, log)))
        sys.exit(1)
