"""What the CLI's stack commands do: up, status, serve (control.py: down, snapshot, logs).

`up` checks what it can in the foreground (so a busy port or a missing folder is one clear
line), fetches what the components need (cloudflared, images) with progress, starts
`mfcolab serve` detached in its own session (a notebook interrupt or kernel restart does not
reach it), and follows the status file (status.py) until the stack is healthy.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .. import credentials
from ..errors import ComponentError, ConfigError, StackStateError, UiBundleError
from ..logfiles import open_log
from ..replica.restore import list_generations
from ..settings import Settings
from ..types import Progress
from ..web.component import served_bundle
from ..web.uibundle import ensure_bundle
from . import control
from .assembly import build_components
from .control import read_status, supervisor_pid, sweep_leftovers
from .loop import Supervisor
from .process import tail_file
from .status import StackStatus

UP_TIMEOUT = 900.0  # a restore of a large database may take a while; progress is shown meanwhile


def prepare_folders(settings: Settings, root_given: bool) -> None:
    """Create the root and local folders, or say in one line why they cannot be used."""
    root = settings.root
    if root_given and not root.exists() and not root.parent.is_dir():
        raise ConfigError(
            f"the root folder {root} does not exist and neither does its parent {root.parent}",
            "mount the shared folder (on Colab: drive.mount('/content/drive')) or pass an existing --root",
        )
    for folder, what in ((root, "root"), (settings.local, "local"), (settings.logs_dir, "local"), (settings.run_dir, "local")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the {what} folder {folder}: {exc.strerror}", f"pass a writable --{what}") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"the {what} folder {folder} is not writable", f"fix its permissions or pass another --{what}")


def preflight(settings: Settings, root_given: bool) -> None:
    if (pid := supervisor_pid(settings)) is not None:
        status = read_status(settings)
        url = (status.public_url if status is not None else "") or settings.local_url
        raise StackStateError(f"mfcolab is already running for {settings.local} (pid {pid}) at {url}",
                              "mfcolab status, or mfcolab down first")
    sweep_leftovers(settings)  # a supervisor that was killed leaves its components holding their ports
    prepare_folders(settings, root_given)
    for component in build_components(settings):
        component.preflight()


def fetch_what_is_missing(settings: Settings, progress: Progress) -> None:
    """Downloads and pulls happen here, in the foreground, so the user sees progress and errors."""
    for component in build_components(settings):
        component.fetch(progress)
    if settings.ui == "native":
        fetch_ui_bundle(settings, progress)


def fetch_ui_bundle(settings: Settings, progress: Progress) -> None:
    """The UI bundle for --ui native; without one the stack still starts (API and metadata service)."""
    try:
        ensure_bundle(settings)
    except UiBundleError as exc:
        if served_bundle(settings) is None:
            progress(f"the Metaflow UI is off: {exc.message}; {exc.hint}")
        else:
            progress(f"the Metaflow UI stays as unpacked before: {exc.message}; {exc.hint}")


def up(settings: Settings, *, root_given: bool, progress: Progress) -> StackStatus:
    preflight(settings, root_given)
    fetch_what_is_missing(settings, progress)
    settings.status_file.unlink(missing_ok=True)
    log_path = settings.logs_dir / "supervisor.log"
    with open_log(log_path) as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "mfcolab", "serve"],
            env={**os.environ, **settings.to_env()},
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    return _follow_start(settings, child, log_path, progress)


def _follow_start(settings: Settings, child: subprocess.Popen[bytes], log_path: Path, progress: Progress) -> StackStatus:
    deadline = time.monotonic() + UP_TIMEOUT
    shown = ""
    while time.monotonic() < deadline:
        status = read_status(settings)
        if status is not None and status.ready:
            return status
        if status is not None and status.phase != shown:
            shown = status.phase
            progress(shown)
        if child.poll() is not None:
            status = read_status(settings)
            error = (status.error if status is not None else "") or f"the supervisor exited with code {child.returncode}"
            raise ComponentError(f"mfcolab did not start: {error}\n{tail_file(log_path, 15)}", "mfcolab logs supervisor")
        time.sleep(0.03)
    control.down(settings, progress=progress)
    raise ComponentError(f"mfcolab did not become healthy within {UP_TIMEOUT:.0f} s", "mfcolab logs")


def status(settings: Settings) -> dict[str, Any]:
    """What `status` prints: the status file's content while a supervisor runs, the folders, the snapshots."""
    pid = supervisor_pid(settings)
    status = read_status(settings) if pid else None
    report = status.to_dict() if status is not None else {}
    report["running"] = pid is not None
    report["root"], report["local"] = str(settings.root), str(settings.local)
    report.setdefault("url", settings.local_url)
    report["snapshots"] = _snapshot_summary(settings)
    return report


def _snapshot_summary(settings: Settings) -> Any:
    try:
        return [dataclasses.asdict(g) for g in list_generations(settings)]
    except Exception as exc:  # status must print even when the root folder is unreadable
        return {"error": str(exc)}


def serve(settings: Settings) -> int:
    prepare_folders(settings, root_given=False)
    return Supervisor(settings).run()


def summary_lines(settings: Settings, status: StackStatus) -> list[str]:
    url = status.public_url or settings.local_url
    key = None if settings.no_auth else credentials.access_key(settings)
    lines = [
        f"front door:       {url}",
        f"metadata service: {url}/metadata",
        f"access key:       {credentials.masked(key) if key else '(none: --no-auth)'}",
        ui_line(settings, url, signed_in=key is None),
        "on the other machine (same shared folder):",
        f"    mfcolab connect --root {settings.root}",
        "or without the shared folder:",
        f"    mfcolab connect {url}" + (" --key-file FILE   (a file holding the key; - reads stdin)" if key else ""),
    ]
    return lines


def ui_line(settings: Settings, url: str, *, signed_in: bool) -> str:
    """Where the Metaflow UI is, and how to sign in to it."""
    if served_bundle(settings) is None:
        return "Metaflow UI:      off" + (" (--ui none)" if settings.ui == "none" else " (no UI bundle: see above)")
    if signed_in:
        return f"Metaflow UI:      {url}/"
    return f"Metaflow UI:      {url}/  (sign in at {url}/login with the access key)"
