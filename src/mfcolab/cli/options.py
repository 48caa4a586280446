"""The option declarations the commands share, and StackOptions: the options of `up` and `serve`
(`serve` is what `up` starts detached), declared once and given to both through `stack_command`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, get_type_hints

import typer

from ..settings import Settings
from .console import settings

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


@dataclasses.dataclass(frozen=True)
class StackOptions:
    """The options of `up` and `serve`, in the order `--help` lists them. None: the settings' default."""

    root: Root = None
    local: Local = None
    port: Port = None
    host: Host = None
    pg_port: PgPort = None
    no_tunnel: NoTunnel = False
    engine: Engine = None
    ui: Ui = None
    no_auth: NoAuth = False
    snapshot_interval: Interval = None
    keep: Keep = None
    cloudflared: Cloudflared = None
    registry: Registry = None
    proot: Proot = None
    image: Image = None
    service_port: ServicePort = None
    ui_port: UiPort = None
    ui_bundle: UiBundle = None

    @property
    def root_given(self) -> bool:
        """True when the user named the root folder (an option or MF_ROOT), not the default."""
        return self.root is not None or "MF_ROOT" in os.environ

    def settings(self) -> Settings:
        return settings(self.root, self.local, port=self.port, host=self.host, pg_port=self.pg_port,
                        tunnel=False if self.no_tunnel else None, engine=self.engine, ui=self.ui,
                        no_auth=self.no_auth or None, snapshot_interval=self.snapshot_interval,
                        keep_generations=self.keep, cloudflared=self.cloudflared, registry=self.registry,
                        proot=self.proot, official_image=self.image, service_port=self.service_port,
                        ui_port=self.ui_port, ui_bundle=self.ui_bundle)


def stack_command(command: Callable[[StackOptions], None]) -> Callable[..., None]:
    """`command` as Typer reads it: one option per StackOptions field, handed on as one StackOptions."""
    hints = get_type_hints(StackOptions, include_extras=True)
    parameters = [inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default,
                                    annotation=hints[field.name])
                  for field in dataclasses.fields(StackOptions)]

    @functools.wraps(command)
    def parsed(**values: Any) -> None:
        command(StackOptions(**values))

    parsed.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    parsed.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return parsed
