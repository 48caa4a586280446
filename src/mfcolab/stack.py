"""What the CLI's stack commands do: up, down, status, logs, serve.

`up` checks what it can in the foreground (so a busy port or a missing folder is one clear
line), starts `mfcolab serve` detached in its own session (a notebook interrupt or kernel
restart does not reach it), and follows <local>/run/status.json until the stack is healthy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import credentials
from .component import require_free_port
from .errors import ComponentError, ConfigError, StackStateError
from .logfiles import open_log
from .process import in_groups, pid_alive, tail_file
from .settings import Settings

Progress = Callable[[str], None]
UP_TIMEOUT = 900.0  # a restore of a large database may take a while; progress is shown meanwhile


def supervisor_pid(settings: Settings) -> int | None:
    try:
        pid = int(settings.supervisor_pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def read_status(settings: Settings) -> dict[str, Any]:
    try:
        return json.loads(settings.status_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}


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
    from .postgres import pg_binary

    if (pid := supervisor_pid(settings)) is not None:
        url = read_status(settings).get("public_url") or settings.local_url
        raise StackStateError(f"mfcolab is already running for {settings.local} (pid {pid}) at {url}",
                              "mfcolab status, or mfcolab down first")
    _sweep_leftovers(settings)  # a supervisor that was killed leaves its components holding their ports
    prepare_folders(settings, root_given)
    pg_binary("postgres")
    require_free_port(settings.port, "front door", "--port", "127.0.0.1" if settings.host == "localhost" else settings.host)
    require_free_port(settings.pg_port, "Postgres server", "--pg-port")
    # The containers share the host network: a taken port fails here, before a pull or a start.
    if settings.engine == "official":
        require_free_port(settings.service_port, "official metadata service", "--service-port")
    if settings.ui == "official":
        require_free_port(settings.ui_port, "official UI backend", "--ui-port")


def fetch_what_is_missing(settings: Settings, progress: Progress) -> None:
    """Downloads and pulls happen here, in the foreground, so the user sees progress and errors."""
    if settings.tunnel:
        from .tunnel import ensure_cloudflared

        ensure_cloudflared(settings)
    if settings.ui == "native":
        fetch_ui_bundle(settings, progress)
    if settings.engine == "official" or settings.ui == "official":
        from . import containers, official
        from .web import database_dsn

        progress("preparing the official images (a first pull can take minutes)")
        official.prepare_all(official.components(settings, database_dsn(settings)), containers.print_progress())


def fetch_ui_bundle(settings: Settings, progress: Progress) -> None:
    """The UI bundle for --ui native; without one the stack still starts (API and metadata service)."""
    from .errors import UiBundleError
    from .uibundle import ensure_bundle
    from .web import served_bundle

    try:
        ensure_bundle(settings)
    except UiBundleError as exc:
        if served_bundle(settings) is None:
            progress(f"the Metaflow UI is off: {exc.message}; {exc.hint}")
        else:
            progress(f"the Metaflow UI stays as unpacked before: {exc.message}; {exc.hint}")


def up(settings: Settings, *, root_given: bool, progress: Progress) -> dict[str, Any]:
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


def _follow_start(settings: Settings, child: subprocess.Popen[bytes], log_path: Path, progress: Progress) -> dict[str, Any]:
    deadline = time.monotonic() + UP_TIMEOUT
    shown = ""
    while time.monotonic() < deadline:
        status = read_status(settings)
        if status.get("ready"):
            return status
        if status.get("phase") and status["phase"] != shown:
            shown = status["phase"]
            progress(shown)
        if child.poll() is not None:
            error = read_status(settings).get("error") or f"the supervisor exited with code {child.returncode}"
            raise ComponentError(f"mfcolab did not start: {error}\n{tail_file(log_path, 15)}", "mfcolab logs supervisor")
        time.sleep(0.03)
    down(settings, progress=progress)
    raise ComponentError(f"mfcolab did not become healthy within {UP_TIMEOUT:.0f} s", "mfcolab logs")


def down(settings: Settings, *, progress: Progress, timeout: float = 180.0) -> bool:
    """Stop the supervisor (which stops everything in reverse order). False if nothing ran."""
    pid = supervisor_pid(settings)
    if pid is None:
        _sweep_leftovers(settings)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    shown = ""
    while pid_alive(pid) and time.monotonic() < deadline:
        phase = read_status(settings).get("phase", "")
        if phase and phase != shown:
            shown = phase
            progress(phase)
        time.sleep(0.05)
    if pid_alive(pid):
        progress(f"the supervisor did not stop within {timeout:.0f} s; killing it")
        os.killpg(pid, signal.SIGKILL)
    _sweep_leftovers(settings)
    return True


def _sweep_leftovers(settings: Settings) -> None:
    """Kill component process groups a killed supervisor left behind (their pids are in status.json)."""
    killed = []
    for component in read_status(settings).get("components", []):
        pid = component.get("pid")
        if pid and pid_alive(pid) and _belongs_to_stack(pid, settings):
            try:
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 10
    while in_groups(killed) and time.monotonic() < deadline:  # every member, not just the leader (proot's children)
        time.sleep(0.05)
    settings.supervisor_pid_file.unlink(missing_ok=True)


def _belongs_to_stack(pid: int, settings: Settings) -> bool:
    """A recorded pid may have been reused: only kill a process whose command or environment names our folders."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(settings.local) in cmdline or str(settings.local) in environ or str(settings.pgdata) in cmdline


def status(settings: Settings) -> dict[str, Any]:
    pid = supervisor_pid(settings)
    report = read_status(settings) if pid else {}
    report["running"] = pid is not None
    report["root"], report["local"] = str(settings.root), str(settings.local)
    report.setdefault("url", settings.local_url)
    report["snapshots"] = _snapshot_summary(settings)
    return report


def _snapshot_summary(settings: Settings) -> Any:
    from .restore import list_generations

    try:
        return [dataclasses.asdict(g) for g in list_generations(settings)]
    except Exception as exc:  # status must print even when the root folder is unreadable
        return {"error": str(exc)}


def component_logs(settings: Settings) -> dict[str, Path]:
    return {p.stem: p for p in sorted(settings.logs_dir.glob("*.log"))}


def follow(path: Path, lines: int, keep_going: Callable[[], bool] = lambda: True) -> Iterator[str]:
    yield from tail_file(path, lines).splitlines()
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        while keep_going():
            line = handle.readline()
            if line:
                yield line.decode(errors="replace").rstrip("\n")
            else:
                time.sleep(0.2)


def serve(settings: Settings) -> int:
    from .supervisor import Supervisor

    prepare_folders(settings, root_given=False)
    return Supervisor(settings).run()


def summary_lines(settings: Settings, status: dict[str, Any]) -> list[str]:
    url = status.get("public_url") or settings.local_url
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
    from .web import served_bundle

    if served_bundle(settings) is None:
        return "Metaflow UI:      off" + (" (--ui none)" if settings.ui == "none" else " (no UI bundle: see above)")
    if signed_in:
        return f"Metaflow UI:      {url}/"
    return f"Metaflow UI:      {url}/  (sign in at {url}/login with the access key)"


def snapshot_now(settings: Settings, *, progress: Progress, timeout: float = 600.0) -> dict[str, Any]:
    """Ask the running supervisor for a snapshot (SIGUSR1) and wait for its report."""
    pid = supervisor_pid(settings)
    if pid is None:
        raise StackStateError(f"no stack is running for {settings.local}; `down` already took a final snapshot",
                              "mfcolab status, or mfcolab up")
    before = read_status(settings).get("last_snapshot", {}).get("at")
    os.kill(pid, signal.SIGUSR1)
    progress("snapshot requested")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        report = read_status(settings).get("last_snapshot", {})
        if report.get("at") and report.get("at") != before:
            if report.get("error"):
                from .errors import SnapshotError

                raise SnapshotError(f"the snapshot failed: {report['error']}", "mfcolab logs supervisor")
            return report
        time.sleep(0.1)
    raise StackStateError("the supervisor did not report a snapshot", "mfcolab logs supervisor")
