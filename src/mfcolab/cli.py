"""The `mfcolab` command. Each command parses its options, calls one function, and prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import typer

from . import crashlog
from .errors import MfcolabError
from .settings import Settings

app = typer.Typer(
    help="A stateful Metaflow metadata service and UI on machines you cannot keep.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,  # help text is plain: "[7860]" is a default, not markup
)

Root = Annotated[Optional[Path], typer.Option("--root", help="Folder that outlives the machine (env MF_ROOT).")]
Local = Annotated[Optional[Path], typer.Option("--local", help="Fast local folder for live data (env MFCOLAB_LOCAL).")]
Port = Annotated[Optional[int], typer.Option("--port", help="Front door port [7860].")]
Host = Annotated[Optional[str], typer.Option("--host", help="Front door bind address [127.0.0.1].")]
PgPort = Annotated[Optional[int], typer.Option("--pg-port", help="Postgres port on 127.0.0.1 [15432].")]
NoTunnel = Annotated[bool, typer.Option("--no-tunnel", help="Do not open a Cloudflare quick tunnel.")]
Engine = Annotated[Optional[str], typer.Option("--engine", help="Metadata service: native or official.")]
Ui = Annotated[Optional[str], typer.Option("--ui", help="UI: native (built in) [default], official (upstream image) or none.")]
UiBundle = Annotated[Optional[str], typer.Option(
    "--ui-bundle", help="Metaflow UI release to serve: a zip, folder or URL [the pinned release, downloaded once into the root folder].")]
NoAuth = Annotated[bool, typer.Option("--no-auth", help="No access key (front door on 127.0.0.1 only).")]
Interval = Annotated[Optional[float], typer.Option("--snapshot-interval", help="Seconds between snapshot cycles [5].")]
Keep = Annotated[Optional[int], typer.Option("--keep", help="Snapshot generations to keep [3].")]
Cloudflared = Annotated[Optional[str], typer.Option("--cloudflared", help="Path to a cloudflared binary.")]
Registry = Annotated[Optional[str], typer.Option("--registry", help="Image registry for the official images.")]
RelayPort = Annotated[Optional[int], typer.Option("--relay-port", help="Port of the --watch relay on 127.0.0.1 [7861].")]
Proot = Annotated[Optional[str], typer.Option("--proot", help="System proot for udocker (no tools download).")]
Image = Annotated[Optional[str], typer.Option("--image", help="Image of the official engine/UI (env MFCOLAB_OFFICIAL_IMAGE).")]
ServicePort = Annotated[Optional[int], typer.Option("--service-port", help="Official metadata service port on 127.0.0.1 [8888].")]
UiPort = Annotated[Optional[int], typer.Option("--ui-port", help="Official UI backend port on 127.0.0.1 [8083].")]

T = TypeVar("T")


def say(line: str) -> None:
    typer.echo(line, err=True)


def fail(exc: MfcolabError) -> NoReturn:
    """Print an error as one line (and its hint), exit with code 1."""
    show_error(exc)
    raise typer.Exit(1)


def show_error(exc: MfcolabError) -> None:
    typer.secho(f"error: {exc.message}", err=True, fg="red")
    if exc.hint:
        typer.echo(f"  try: {exc.hint}", err=True)


def run(action: Callable[[], T]) -> T:
    """Run one action; an MfcolabError becomes one line on stderr and exit code 1."""
    try:
        return action()
    except MfcolabError as exc:
        fail(exc)


_in_use: list[Settings] = []  # the settings this command resolved: its error log goes to their logs folder


def settings(root: Path | None = None, local: Path | None = None, **more: Any) -> Settings:
    resolved = run(lambda: Settings.resolve(root=root, local=local, **more))
    _in_use.append(resolved)
    return resolved


def main() -> None:
    """The `mfcolab` command. An unexpected exception ends as one line and exit code 1; its
    traceback goes to the error log that the line names."""
    try:
        app(prog_name="mfcolab")
    except Exception as exc:  # noqa: BLE001 - the boundary for whatever nothing else caught
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
        log = crashlog.record(exc, _error_log_folder(), command)
        show_error(MfcolabError(*crashlog.explain(exc, command, log)))
        sys.exit(1)


def _error_log_folder() -> Path | None:
    if _in_use:
        return _in_use[-1].logs_dir
    try:
        return Settings.resolve().logs_dir
    except Exception:  # noqa: BLE001 - the environment itself is unusable: the temporary folder will do
        return None


@app.callback()
def _logging(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False) -> None:
    from . import logsetup

    logsetup.for_console(verbose)


def _stack_settings(root: Path | None, local: Path | None, port: int | None, host: str | None, pg_port: int | None,
                    no_tunnel: bool, engine: str | None, ui: str | None, no_auth: bool, snapshot_interval: float | None,
                    keep: int | None, cloudflared: str | None, registry: str | None, proot: str | None,
                    image: str | None, service_port: int | None, ui_port: int | None,
                    ui_bundle: str | None) -> Settings:
    return settings(root, local, port=port, host=host, pg_port=pg_port, tunnel=False if no_tunnel else None,
                    engine=engine, ui=ui, no_auth=no_auth or None, snapshot_interval=snapshot_interval,
                    keep_generations=keep, cloudflared=cloudflared, registry=registry, proot=proot,
                    official_image=image, service_port=service_port, ui_port=ui_port, ui_bundle=ui_bundle)


@app.command()
def up(root: Root = None, local: Local = None, port: Port = None, host: Host = None, pg_port: PgPort = None,
       no_tunnel: NoTunnel = False, engine: Engine = None, ui: Ui = None, no_auth: NoAuth = False,
       snapshot_interval: Interval = None, keep: Keep = None, cloudflared: Cloudflared = None,
       registry: Registry = None, proot: Proot = None, image: Image = None,
       service_port: ServicePort = None, ui_port: UiPort = None, ui_bundle: UiBundle = None) -> None:
    """Start the stack detached, wait until it is healthy, print how to connect."""
    from .supervisor import stack

    s = _stack_settings(root, local, port, host, pg_port, no_tunnel, engine, ui, no_auth, snapshot_interval, keep,
                        cloudflared, registry, proot, image, service_port, ui_port, ui_bundle)
    root_given = root is not None or "MF_ROOT" in os.environ
    status = run(lambda: stack.up(s, root_given=root_given, progress=say))
    typer.echo("\n".join(stack.summary_lines(s, status)))


@app.command()
def serve(root: Root = None, local: Local = None, port: Port = None, host: Host = None, pg_port: PgPort = None,
          no_tunnel: NoTunnel = False, engine: Engine = None, ui: Ui = None, no_auth: NoAuth = False,
          snapshot_interval: Interval = None, keep: Keep = None, cloudflared: Cloudflared = None,
          registry: Registry = None, proot: Proot = None, image: Image = None,
          service_port: ServicePort = None, ui_port: UiPort = None, ui_bundle: UiBundle = None) -> None:
    """Run the supervisor in the foreground (what `up` starts detached)."""
    from . import logsetup
    from .supervisor import stack

    logsetup.for_service()
    s = _stack_settings(root, local, port, host, pg_port, no_tunnel, engine, ui, no_auth, snapshot_interval, keep,
                        cloudflared, registry, proot, image, service_port, ui_port, ui_bundle)
    raise typer.Exit(run(lambda: stack.serve(s)))


@app.command()
def down(root: Root = None, local: Local = None) -> None:
    """Stop the stack: tunnel and service first, Postgres last, then a final snapshot."""
    from .supervisor import control

    s = settings(root, local)
    if run(lambda: control.down(s, progress=say)):
        typer.echo("stopped")
    else:
        typer.echo(f"nothing is running for {s.local}")


@app.command()
def status(root: Root = None, local: Local = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every component with its state, pid, port and health; the URL; the snapshots."""
    from .supervisor import stack
    from .supervisor.status_view import render

    report = run(lambda: stack.status(settings(root, local)))
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))
    if not report["running"]:
        raise typer.Exit(3)


@app.command()
def logs(component: Annotated[Optional[str], typer.Argument(help="postgres, web, tunnel, supervisor, ...")] = None,
         root: Root = None, local: Local = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n")] = 50) -> None:
    """Print a component's log (all of them, briefly, without COMPONENT)."""
    from .errors import ConfigError
    from .supervisor import control
    from .supervisor.process import tail_file

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


@app.command()
def snapshot(root: Root = None, local: Local = None) -> None:
    """Take a snapshot now and print what was shipped."""
    from .supervisor import control

    typer.echo(json.dumps(run(lambda: control.snapshot_now(settings(root, local), progress=say)), indent=2, default=str))


@app.command()
def restore(root: Root = None, local: Local = None,
            generation: Annotated[Optional[str], typer.Option("--generation", help="Generation to restore [newest].")] = None,
            until: Annotated[Optional[str], typer.Option("--until", help="Recover up to this time: ISO 8601 with an offset, "
                                                         "a local time ('2026-01-31 14:05:00') or a span ago (-10m).")] = None,
            move_aside: Annotated[bool, typer.Option("--move-aside", help="Keep the current database under a new name "
                                                     "(pgdata.before-restore-<time>) instead of refusing.")] = False,
            list_windows: Annotated[bool, typer.Option("--list", help="Show each generation's restorable window; restore nothing.")] = False) -> None:
    """Restore the database from the root folder (the stack must be down)."""
    from .errors import StackStateError
    from .replica import restore as restoring
    from .supervisor import control

    s = settings(root, local)
    if list_windows:
        typer.echo("\n".join(restoring.window_lines(run(lambda: restoring.list_generations(s)))))
        return

    def restore_now() -> str:
        if control.supervisor_pid(s) is not None:
            raise StackStateError("the stack is running", "mfcolab down first")
        return restoring.restore(s, generation=generation, until=until, progress=say, move_aside=move_aside)

    typer.echo(run(restore_now))


@app.command()
def key(root: Root = None, local: Local = None) -> None:
    """Print the access key (`up` prints it masked, so it does not stay in a saved notebook)."""
    from . import credentials
    from .errors import ConfigError

    s = settings(root, local)
    if not s.key_file.is_file():
        fail(ConfigError(f"no access key in {s.root} yet", f"mfcolab up --root {s.root}"))
    typer.echo(run(lambda: credentials.access_key(s)))


@app.command("rotate-key")
def rotate_key(root: Root = None, local: Local = None) -> None:
    """Replace the access key: the old key and every browser session stop working at once."""
    from . import credentials

    s = settings(root, local)
    new = run(lambda: credentials.rotate_access_key(s))
    say(f"new access key: {credentials.masked(new)}")
    say("the old key and every browser session are refused now; connection.json carries the new key "
        "(a `connect --watch` relay picks it up; other clients run `mfcolab connect` again)")


@app.command()
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
    from .client import connect as client
    from .credentials import read_key_file

    if key_file is not None:
        key = run(lambda: read_key_file(key_file))
    root = root or (Path(os.environ["MF_ROOT"]) if os.environ.get("MF_ROOT") else None)
    folder = _relay_folder(local)
    if stop_relay:
        typer.echo("relay stopped" if client.stop_watching(folder) else f"no relay was running ({folder})")
        return
    if watch:
        port = relay_port or _default_relay_port()
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


@app.command(hidden=True)
def relay(root: Annotated[Path, typer.Option("--root")], relay_port: RelayPort = None,
          folder: Annotated[Optional[Path], typer.Option("--folder")] = None, local: Local = None) -> None:
    """Run the relay of `connect --watch` in the foreground."""
    from . import logsetup
    from .client import relay as relaying

    logsetup.for_service()
    where = relaying.RelayFolder(folder or _relay_folder(local))
    raise typer.Exit(run(lambda: relaying.serve(root.absolute(), relay_port or _default_relay_port(), where)))


def _relay_folder(local: Path | None) -> Path:
    return settings(None, local).local / "relay"


def _default_relay_port() -> int:
    from .client.relay import DEFAULT_PORT

    return DEFAULT_PORT


if __name__ == "__main__":  # pragma: no cover
    main()
