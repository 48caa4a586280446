"""The `mfcolab` command: one module per command; each parses its options, calls one function, prints.

    app        the Typer app with every command registered, logging set up in its callback,
               and main(): the last boundary, where an unexpected exception becomes one line
    console    what every command shares: errors as one line and exit code 1, progress on stderr,
               the settings a command resolved (its error log goes to their logs folder)
    options    the option declarations, and StackOptions: the options of `up` and `serve`, declared once
    up, serve, down, status, logs, snapshot, restore, keys (key, rotate-key), connect, relay (hidden)

Commands import what they call inside the function, so that `mfcolab --help` stays fast.
"""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
