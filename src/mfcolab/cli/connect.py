"""`mfcolab connect`: point this machine's Metaflow client at the service, directly or through a
local relay that follows connection.json (`--watch`); `--stop-relay` stops that relay."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .console import run, say
from .options import Local, RelayPort, Root
from .relay import default_relay_port, relay_folder


def connect(url: Annotated[Optional[str], typer.Argument(help="Front door URL (omit with --root).")] = None,
            key: Annotated[Optional[str], typer.Option("--key", help="Access key (visible in ps: prefer --key-file).")] = None,
            key_file: Annotated[Optional[str], typer.Option("--key-file", help="File holding the access key; - reads stdin.")] = None,
            root: Root = None,
            profile: Annotated[str, typer.Option("--profile", help="Metaflow profile name.")] = "mfcolab",
            watch: Annotated[bool, typer.Option("--watch", help="Follow URL changes through a local relay (needs --root).")] = False,
            relay_port: RelayPort = None,
            stop_relay: Annotated[bool, typer.Option("--stop-relay", help="Stop the relay started by --watch.")] = False,
            local: Local = None,
            user: Annotated[Optional[str], typer.Option("--user", help="User name runs are recorded under (METAFLOW_USER); "
                                                        "default: colab where Metaflow finds none, as root on Colab.")] = None) -> None:
    """Point the Metaflow client on this machine at the service."""
    from ..client import connect as client
    from ..credentials import read_key_file

    if key_file is not None:
        key = run(lambda: read_key_file(key_file))
    root = root or (Path(os.environ["MF_ROOT"]) if os.environ.get("MF_ROOT") else None)
    folder = relay_folder(local)
    if stop_relay:
        typer.echo("relay stopped" if client.stop_watching(folder) else f"no relay was running ({folder})")
        return
    if watch:
        port = relay_port or default_relay_port()
        w = run(lambda: client.connect_watching(key, root, profile, port, folder, user))
        how = "reusing the relay" if w.reused else "started a relay"
        say(f"connected to {w.public.service_url} (metadata service {w.version})")
        say(f"{how} on {w.local.url} (pid {w.relay_state.get('pid')}); it follows {root}/connection.json")
        stop = "mfcolab connect --stop-relay" + (f" --local {local}" if local else "")
        say(f"profile written to {w.profile_path}; stop the relay with `{stop}`")
        target = w.local
    else:
        target, path, version = run(lambda: client.connect(url, key, root, profile, user))
        say(f"connected to {target.service_url} (metadata service {version}); profile written to {path}")
    if target.user:
        why = "" if user else " (Metaflow accepts no run by 'root' and found no other name here)"
        say(f"runs are recorded as user {target.user!r}{why}; choose another with --user NAME")
    typer.echo(f"export METAFLOW_PROFILE={profile}")
