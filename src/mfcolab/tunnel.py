"""The public URL: a cloudflared quick tunnel to the front door.

cloudflared runs as `cloudflared tunnel --no-autoupdate --url <front door> --metrics 127.0.0.1:<port>`.
Its URL comes from the metrics server (GET /quicktunnel), else from the boxed row of its log;
never from a loose `https://` grep, which would catch api.trycloudflare.com in error lines and
the links in the start-up disclaimer. The tunnel is healthy once /ready answers 200, the URL is
known and (unless turned off) the front door's /healthz answers through the public URL. Each
new URL is handed to `on_url`; restarting after a death is the supervisor's job, and every
start asks Cloudflare for a new URL.

The binary is `--cloudflared PATH`, else `cloudflared` on PATH, else the pinned release below,
downloaded once into <local>/bin with its published SHA-256 checked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from .download import download_file
from .errors import MissingBinaryError, TunnelError
from .settings import Settings
from .supervisor.component import ProcessComponent
from .supervisor.process import ManagedProcess
from .types import Progress

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CloudflaredRelease:
    tag: str
    sha256: Mapping[str, str]  # architecture (amd64, arm64) -> SHA-256 of cloudflared-linux-<arch>
    base_url: str = "https://github.com/cloudflare/cloudflared/releases/download"

    def asset_url(self, arch: str) -> str:
        return f"{self.base_url}/{self.tag}/cloudflared-linux-{arch}"


# The one place the pinned release lives. Digests as published in the "SHA256 Checksums"
# section of the release notes for this tag.
PINNED_RELEASE = CloudflaredRelease(
    tag="2026.9.1",
    sha256={
        "amd64": "03f1f25d1cc93b9ad6c60569d44060bc4f17ed97075760ed8cfca4b12dcd68cc",
        "arm64": "3d97437c71848bd8df68041e12436b484a661d95073ea1937f01a845ce88faa3",
    },
)

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_INSTALL_HINT = "pass --cloudflared PATH, or put cloudflared on PATH"


def machine_arch() -> str:
    """cloudflared's name for this machine's architecture (amd64, arm64)."""
    machine = platform.machine().lower()
    return _ARCHES.get(machine, machine)


def installed_path(local: Path) -> Path:
    return local / "bin" / "cloudflared"


def find_cloudflared(
    explicit: str | os.PathLike[str] | None,
    local: Path,
    *,
    download: bool = True,
    search_path: str | None = None,
    release: CloudflaredRelease = PINNED_RELEASE,
    progress: bool = True,
) -> Path:
    """The cloudflared to run: `explicit`, else PATH, else <local>/bin/cloudflared (downloaded if missing)."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.absolute()
        raise MissingBinaryError(
            f"cloudflared not found or not executable at {path}",
            "pass --cloudflared with the path of an executable cloudflared",
        )
    on_path = shutil.which("cloudflared", path=search_path)
    if on_path:
        return Path(on_path)
    target = installed_path(local)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    if not download:
        raise MissingBinaryError("cloudflared is not installed", _INSTALL_HINT)
    return install_cloudflared(target, release=release, progress=progress)


def install_cloudflared(target: Path, *, release: CloudflaredRelease = PINNED_RELEASE, progress: bool = True) -> Path:
    arch = machine_arch()
    digest = release.sha256.get(arch)
    if digest is None:
        raise MissingBinaryError(f"no pinned cloudflared {release.tag} build for this machine ({arch})", _INSTALL_HINT)
    url = release.asset_url(arch)
    log.info("downloading cloudflared %s from %s", release.tag, url)
    try:
        return download_file(url, target, digest, progress=progress)
    except TunnelError as exc:
        message = f"cloudflared is not installed and its download failed: {exc.message}"
        raise MissingBinaryError(message, _INSTALL_HINT) from exc


# ---- reading cloudflared's output -------------------------------------------------------------

# zerolog console format: "2023-01-16T08:32:58Z INF <message> key=value ..."
_LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})\s+[A-Z]{3}\s+(?P<msg>.*)$")
# A row of the box around the URL (AsciiBox before 2026.5, cliutil.LogTable after): "|  <text>  |".
_BOX_ROW = re.compile(r"^\|\s+(?P<text>\S.*?)\s+\|$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_QUICK_URL = re.compile(rf"^https://(?P<sub>{_LABEL})\.trycloudflare\.com$")
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
_NOT_TUNNELS = frozenset({"api", "www"})


def log_message(line: str) -> str | None:
    """The message of one cloudflared log line (console or `--output json` format), else None."""
    line = line.strip()
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        message = entry.get("message") if isinstance(entry, dict) else None
        return message if isinstance(message, str) else None
    match = _LOG_LINE.match(line)
    return match.group("msg") if match else None


def url_in_line(line: str) -> str | None:
    """The tunnel URL if `line` is the boxed URL row of a log, else None."""
    message = log_message(line)
    if message is None:
        return None
    row = _BOX_ROW.match(message.strip())
    if row is None:
        return None
    url = _QUICK_URL.match(row.group("text").lower())
    if url is None or url.group("sub") in _NOT_TUNNELS:
        return None
    return url.group(0)


def url_in_log(text: str) -> str | None:
    """The last boxed tunnel URL in a stretch of log."""
    found = None
    for line in text.splitlines():
        found = url_in_line(line) or found
    return found


def url_from_hostname(hostname: str) -> str | None:
    """https://<hostname> for a /quicktunnel answer; None when it is empty or not a host name."""
    host = hostname.strip().lower()
    if host.startswith("https://"):
        host = host[len("https://") :]
    host = host.rstrip("/")
    return f"https://{host}" if _HOSTNAME.match(host) else None


RATE_LIMITED = (
    "Cloudflare rate-limited quick tunnels from this machine's address (error 1015, HTTP 429); "
    "mfcolab keeps retrying with backoff: wait a few minutes, or run with --no-tunnel and reach the service another way"
)
_SERVICE_ERROR = re.compile(r"Error unmarshaling QuickTunnel response: .*?error code: (?P<code>\d+)")
_STATUS = re.compile(r'status_code="(?P<status>[^"]+)"')


def diagnose(text: str) -> str | None:
    """Why cloudflared failed, in words, from its log; None when the log shows no known failure.

    The first failure line wins: it carries the detail, later ones only restate the consequence.
    """
    for line in text.splitlines():
        reason = _diagnose_line(line)
        if reason:
            return reason
    return None


def _diagnose_line(line: str) -> str | None:
    if "error code: 1015" in line or ("QuickTunnel response" in line and "429" in line):
        return RATE_LIMITED
    service = _SERVICE_ERROR.search(line)
    if service:
        status = _STATUS.search(line)
        detail = f"error {service.group('code')}" + (f", HTTP {status.group('status')}" if status else "")
        return (
            f"Cloudflare's quick-tunnel service refused a new tunnel ({detail}); "
            "this is usually temporary and mfcolab retries"
        )
    if "failed to unmarshal quick Tunnel" in line:
        return "Cloudflare's quick-tunnel service gave an unreadable answer (often its rate limit); mfcolab retries"
    if "failed to request quick Tunnel" in line:
        detail = line.split("failed to request quick Tunnel", 1)[1].lstrip(": ").strip()
        return f"cloudflared could not reach api.trycloudflare.com ({detail}); check this machine's outbound HTTPS"
    return None


# ---- the component ------------------------------------------------------------------------------

_LOG_WINDOW = 256 * 1024  # bytes of the current run's log read when looking for the URL or a failure


class TunnelComponent(ProcessComponent):
    """cloudflared as a supervised child; `on_url(url)` is called once for each new public URL."""

    start_timeout = 90.0  # a quick tunnel can take a while before its URL answers
    essential = False  # the stack is usable on its local URL while the tunnel retries
    restart_limit = None  # rate limits and network hiccups pass: keep retrying with backoff
    verify_interval = 30.0  # seconds a successful check through the tunnel is trusted

    def __init__(
        self,
        settings: Settings,
        on_url: Callable[[str], None],
        *,
        verify_through_tunnel: bool = True,
        route: Callable[[str], str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        download: bool = True,
        release: CloudflaredRelease = PINNED_RELEASE,
    ) -> None:
        """`route` maps the public URL to the address probed for /healthz (identity by default)."""
        super().__init__("tunnel", settings.logs_dir)
        self.settings = settings
        self.target = settings.local_url
        self.on_url = on_url
        self.verify_through_tunnel = verify_through_tunnel
        self.route = route or (lambda url: url)
        self.extra_env = dict(extra_env or {})
        self.download = download
        self.release = release
        self.binary: Path | None = None
        self.metrics_port: int | None = None
        self.url: str | None = None
        self._announced: str | None = None
        self._verified_at: float | None = None
        self._previous_failure: str | None = None  # why the last run ended without a tunnel
        self._log_offset = 0
        self._lock = threading.RLock()  # on_url may ask for info() (the supervisor writes its status)

    # lifecycle

    def fetch(self, progress: Progress) -> None:
        """Find or download the binary now (`up` calls this before detaching, so the progress bar is seen)."""
        self.before_spawn()

    def before_spawn(self) -> None:
        if self.binary is None or not self.binary.is_file():
            self.binary = find_cloudflared(
                self.settings.cloudflared, self.settings.local, download=self.download, release=self.release
            )

    def start(self) -> None:
        """Start a fresh cloudflared: new metrics port, URL forgotten (a restart brings a new one)."""
        with self._lock:
            self._previous_failure = self.failure_reason() if self.process is not None else None
            self.url = None
            self._verified_at = None
        self.metrics_port = _free_port()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start()

    def make_process(self) -> ManagedProcess:
        if self.binary is None or self.metrics_port is None:
            raise TunnelError("cloudflared was started before it was located", "mfcolab logs tunnel")
        argv = [
            str(self.binary), "tunnel", "--no-autoupdate",
            "--url", self.target,
            "--metrics", f"127.0.0.1:{self.metrics_port}",
        ]  # fmt: skip
        env = {**os.environ, **self.extra_env} if self.extra_env else None
        return ManagedProcess(self.name, argv, self.log_path, env=env)

    # health

    def healthy(self) -> bool:
        if not self.alive() or not self._metrics_ready():
            return False
        url = self.current_url()
        if url is None:
            return False
        if self.verify_through_tunnel and not self._answers_through_tunnel(url):
            return False
        self._announce(url)
        return True

    def current_url(self) -> str | None:
        """This run's public URL once cloudflared has one (metrics server first, then the log)."""
        with self._lock:
            if self.url is None and self.alive():
                self.url = self._url_from_metrics() or url_in_log(self._run_log())
            return self.url

    def failure_reason(self) -> str | None:
        """Why this run has no tunnel; while a retry has no URL yet, why the last run had none."""
        reason = diagnose(self._run_log())
        if reason is None and self.process is not None and not self.alive() and self.url is None:
            code = self.process.exit_code()
            reason = f"cloudflared exited with code {code} before creating a tunnel (see {self.log_path})"
        if reason is None and self.url is None and self._previous_failure:
            reason = f"{self._previous_failure} (last attempt; trying again)"
        return reason

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = {"url": self.current_url() if self.alive() else self.url}
        if self.metrics_port is not None:
            data["metrics"] = f"127.0.0.1:{self.metrics_port}"
        reason = self.failure_reason()
        if reason:
            data["error"] = reason
        return data

    @property
    def port(self) -> int | None:
        return self.metrics_port

    # helpers

    def _metrics_get(self, path: str) -> requests.Response | None:
        try:
            return requests.get(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=0.5)
        except requests.RequestException:
            return None

    def _metrics_ready(self) -> bool:
        response = self._metrics_get("/ready")
        return response is not None and response.status_code == 200

    def _url_from_metrics(self) -> str | None:
        response = self._metrics_get("/quicktunnel")
        if response is None or response.status_code != 200:
            return None
        try:
            hostname = response.json().get("hostname", "")
        except (ValueError, AttributeError):
            return None
        return url_from_hostname(hostname) if isinstance(hostname, str) else None

    def _answers_through_tunnel(self, url: str) -> bool:
        now = time.monotonic()
        if self._verified_at is not None and now - self._verified_at < self.verify_interval:
            return True
        try:
            response = requests.get(self.route(url).rstrip("/") + "/healthz", timeout=2.0)
        except requests.RequestException as exc:
            log.debug("tunnel %s does not answer yet: %s", url, exc)
            return False
        if response.status_code != 200:
            log.debug("tunnel %s answered /healthz with %s", url, response.status_code)
            return False
        self._verified_at = now
        return True

    def _announce(self, url: str) -> None:
        with self._lock:
            if url == self._announced:
                return
            try:
                self.on_url(url)
            except Exception:  # the publisher's failure must not take the tunnel down; retried next check
                log.exception("publishing the tunnel URL %s failed", url)
                return
            self._announced = url
            log.info("tunnel URL: %s", url)

    def _run_log(self) -> str:
        """The log written since this run started (its last _LOG_WINDOW bytes)."""
        try:
            with open(self.log_path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(self._log_offset, size - _LOG_WINDOW))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
