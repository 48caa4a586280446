"""What every command shares: an MfcolabError as one line (and its hint) with exit code 1,
progress lines on stderr, and the settings the command resolved."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from ..errors import MfcolabError
from ..settings import Settings

T = TypeVar("T")

_in_use: list[Settings] = []  # the settings this command resolved: its error log goes to their logs folder


def say(line: str) -> None:
    typer.echo(line, err=True)


def show_error(exc: MfcolabError) -> None:
    typer.secho(f"error: {exc.message}", err=True, fg="red")
    if exc.hint:
        typer.echo(f"  try: {exc.hint}", err=True)


def fail(exc: MfcolabError) -> NoReturn:
    """Print an error as one line (and its hint), exit with code 1."""
    show_error(exc)
    raise typer.Exit(1)


def run(action: Callable[[], T]) -> T:
    """Run one action; an MfcolabError becomes one line on stderr and exit code 1."""
    try:
        return action()
    except MfcolabError as exc:
        fail(exc)


def settings(root: Path | None = None, local: Path | None = None, **more: Any) -> Settings:
    resolved = run(lambda: Settings.resolve(root=root, local=local, **more))
    _in_use.append(resolved)
    return resolved


def error_log_folder() -> Path | None:
    """Where an unexpected error's traceback goes: the logs folder of the settings in use, else of
    the default settings, else None (the temporary folder)."""
    if _in_use:
        return _in_use[-1].logs_dir
    try:
        return Settings.resolve().logs_dir
    except Exception:  # noqa: BLE001 - the environment itself is unusable: the temporary folder will do
        return None
