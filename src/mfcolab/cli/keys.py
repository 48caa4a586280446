"""`mfcolab key` prints the access key; `mfcolab rotate-key` replaces it."""

from __future__ import annotations

import typer

from ..errors import ConfigError
from .console import fail, run, say, settings
from .options import Local, Root


def key(root: Root = None, local: Local = None) -> None:
    """Print the access key (`up` prints it masked, so it does not stay in a saved notebook)."""
    from .. import credentials

    s = settings(root, local)
    if not s.key_file.is_file():
        fail(ConfigError(f"no access key in {s.root} yet", f"mfcolab up --root {s.root}"))
    typer.echo(run(lambda: credentials.access_key(s)))


def rotate_key(root: Root = None, local: Local = None) -> None:
    """Replace the access key: the old key and every browser session stop working at once."""
    from .. import credentials

    s = settings(root, local)
    new = run(lambda: credentials.rotate_access_key(s))
    say(f"new access key: {credentials.masked(new)}")
    say("the old key and every browser session are refused now; connection.json carries the new key "
        "(a `connect --watch` relay picks it up; other clients run `mfcolab connect` again)")
