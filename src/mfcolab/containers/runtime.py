"""Images and containers under udocker: no Docker daemon, no root privileges needed.

udocker (the PyPI package, run as `python -m udocker.maincmd`) keeps everything in one folder,
UDOCKER_DIR = <local>/udocker: its tools (proot), pulled images, created containers. That folder
needs symlinks, so it never lives on Drive. What this module adds on top of udocker:

- tools: udocker's own download on first use, or a system proot (`--proot PATH`) through a
  wrapper that drops udocker's `-k <kernel>` argument (Debian's proot 5.x breaks the dynamic
  loader of every glibc program when asked to emulate a kernel release);
- pulls that show progress, retry transient failures, and say why they failed (registry
  unreachable, rate limit, image missing, login refused), which udocker itself reports as one
  "Error: pulling manifest" line;
- containers created once and reused by name;
- a detached run in its own session, so stopping kills the whole process group: udocker has no
  `stop`, and killing only the udocker process leaves proot and the service running.

Containers share the host network (proot has no network namespace and Debian's proot ignores
`-p`), so every service gets its own 127.0.0.1 port through its own environment variables.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ContainerError, MissingBinaryError
from ..logfiles import open_log
from ..supervisor.component import ProcessComponent, port_answers, require_free_port
from ..supervisor.process import ManagedProcess, as_user, find_processes, stop_processes
from ..types import Progress
from .container_user import (
    container_user,
    ensure_container_user,
    give_to_container_user,
    udocker_python,
)

log = logging.getLogger(__name__)

DOCKER_HUB = "https://registry-1.docker.io"
USER_ENV = "MFCOLAB_REGISTRY_USER"
PASSWORD_ENV = "MFCOLAB_REGISTRY_PASSWORD"
MIRROR_HINT = "--registry public.ecr.aws/outerbounds"
PROOT_WRAPPER = "mfcolab-proot"
REPO_NAME = re.compile(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*")
TAG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
COMMAND_TIMEOUT = 1800.0  # a pull of a large image on a slow link


# -- where an image comes from ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """An image as udocker pulls it: `repo:tag` from `registry_url` (None: udocker's default, Docker Hub)."""

    repo: str
    tag: str
    registry_url: str | None = None

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def registry(self) -> str:
        return self.registry_url or DOCKER_HUB

    @property
    def remote_repo(self) -> str:
        """The repository path the registry knows (Docker Hub puts single names under library/)."""
        if self.registry_url is None and "/" not in self.repo:
            return f"library/{self.repo}"
        return self.repo

    def __str__(self) -> str:
        return self.name if self.registry_url is None else f"{self.name} from {self.registry_url}"


def resolve_image(image: str, registry: str = "") -> ImageRef:
    """Where to pull `image` ("owner/name:tag", or "host/owner/name:tag") from, given `--registry`.

    `registry` is a host, a URL, or either with a namespace path: "public.ecr.aws/outerbounds"
    pulls netflixoss/metaflow_metadata_service as outerbounds/metaflow_metadata_service from
    https://public.ecr.aws. A scheme-less host means https; "http://..." is kept (a plain-HTTP
    registry, which udocker reaches only through an explicit scheme).
    """
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        name, tag = image, "latest"
    parts = name.split("/")
    host = parts[0] if len(parts) > 1 and ("." in parts[0] or ":" in parts[0]) else ""
    repo = "/".join(parts[1:] if host else parts)
    if not REPO_NAME.fullmatch(repo) or not TAG_NAME.fullmatch(tag):
        raise ContainerError(f"{image!r} is not an image name", "write it as owner/name:tag")
    if registry:
        url, namespace = _split_registry(registry)
        if namespace:
            repo = f"{namespace}/{repo.rsplit('/', 1)[-1]}"
        return ImageRef(repo, tag, url)
    if host:
        return ImageRef(repo, tag, f"https://{host}")
    return ImageRef(repo, tag, None)


def _split_registry(registry: str) -> tuple[str, str]:
    scheme, sep, rest = registry.partition("://")
    if not sep:
        scheme, rest = "https", registry
    if scheme not in ("http", "https"):
        raise ContainerError(f"registry {registry!r} has an unknown scheme", "use https://HOST or http://HOST:PORT")
    host, _, namespace = rest.rstrip("/").partition("/")
    if not host:
        raise ContainerError(f"registry {registry!r} names no host", "for example --registry public.ecr.aws/outerbounds")
    return f"{scheme}://{host}", namespace


# -- what to run -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """One long-running service from an image.

    `volumes` are bound at the same absolute path inside the container; `binds` put a host folder
    at another path. `entrypoint` None keeps the image's; "" clears it. `secret_env` travels in a 0600 env file instead of the command
    line (which `ps` and the log show); udocker lets the image's own Env win over that file, so
    it is for variables the image does not set, such as a password. `health_path` (an HTTP path on 127.0.0.1:`port`) is the health
    check; without it, the port answering is.
    """

    name: str
    image: str
    command: tuple[str, ...]
    port: int
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    secret_env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # kept out of argv and logs
    volumes: tuple[Path, ...] = ()
    binds: tuple[tuple[Path, str], ...] = ()  # (host folder, path inside): a folder seen elsewhere
    workdir: str | None = None
    entrypoint: str | None = None
    health_path: str | None = None
    port_flag: str = "--port"  # the flag that moves `port`, named in the busy-port error


@dataclasses.dataclass(frozen=True)
class PullProgress:
    image: str
    done: int  # bytes on disk
    total: int  # bytes in the manifest (0 until the manifest arrived)
    layers_done: int
    layers_total: int
    finished: bool = False


ProgressCallback = Callable[[PullProgress], None]


# -- udocker itself --------------------------------------------------------------------------------


class Udocker:
    """The udocker command line with mfcolab's folder, tools and registry credentials."""

    def __init__(self, home: Path, *, proot: str = "", log_path: Path | None = None, user: str | None = None) -> None:
        self.home = home
        self.proot = proot
        self.log_path = log_path or home / "udocker.log"
        self.user = user  # a system user every udocker command runs as (None: this process' user)
        self._tools_ready = False

    @classmethod
    def from_settings(cls, settings: Any) -> Udocker:
        return cls(settings.udocker_dir, proot=settings.proot, log_path=settings.logs_dir / "udocker.log",
                   user=container_user())

    # command line and environment

    def argv(self, *args: str) -> list[str]:
        python = udocker_python()[0] if self.user is not None else sys.executable
        base = [python, "-m", "udocker.maincmd"]
        if os.geteuid() == 0 and self.user is None:
            base.append("--allow-root")  # udocker refuses root otherwise, and has no variable for it
        return [*base, *args]

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("UDOCKER_")}
        env["UDOCKER_DIR"] = str(self.home)
        if self.user is not None:
            env["HOME"] = str(self.home)  # udocker reads ~/.udocker; root's home is not the user's
            env["PYTHONPATH"] = udocker_python()[1]
        if self.proot:
            env["UDOCKER_TARBALL"] = ""  # empty: install nothing, use the proot below
            env["UDOCKER_USE_PROOT_EXECUTABLE"] = str(self.wrapper_path)
        return env

    def call(self, *args: str, stdin: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run one udocker command to completion; its output is returned and appended to the log."""
        argv = self.argv(*args)
        try:
            result = subprocess.run(argv, check=False, input=stdin, capture_output=True, text=True, env=self.env(),
                                    timeout=timeout, stdin=None if stdin is not None else subprocess.DEVNULL,
                                    **as_user(self.user))
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"udocker {args[0]} did not finish within {timeout:.0f} s",
                                 f"see {self.log_path}") from exc
        self._append_log(args, result)
        return result

    def _append_log(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        shown = ["***" if arg.startswith("--password") else arg for arg in args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open_log(self.log_path) as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} udocker {' '.join(shown)} -> {result.returncode}\n".encode())
            out.write((result.stdout or "").encode(errors="replace"))
            out.write((result.stderr or "").encode(errors="replace"))

    # tools

    @property
    def wrapper_path(self) -> Path:
        return self.home / PROOT_WRAPPER

    def ensure_tools(self) -> None:
        """Make udocker usable: its own tools downloaded, or the system proot behind our wrapper."""
        if self._tools_ready:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            give_to_container_user(self.home)
        if self.proot:
            self._write_proot_wrapper(self._system_proot())
        result = self.call("install", timeout=600)
        if result.returncode != 0:
            raise MissingBinaryError(
                "udocker could not install its tools (proot): " + _last_error(result),
                "on a machine without that download, apt-get install proot and pass --proot /usr/bin/proot",
            )
        self._tools_ready = True

    def _system_proot(self) -> Path:
        found = shutil.which(self.proot)
        if found is None:
            raise MissingBinaryError(
                f"proot not found at {self.proot}",
                "apt-get install proot (then --proot /usr/bin/proot), or drop --proot to use udocker's own download",
            )
        return Path(found).resolve()

    def _write_proot_wrapper(self, proot: Path) -> None:
        # udocker always passes "-k <host kernel release>"; with Debian's proot any -k value breaks the
        # dynamic loader of glibc programs, and the emulation is not needed on a current kernel.
        script = "\n".join([
            "#!/bin/sh",
            "# proot for udocker, without kernel-release emulation (-k X), which breaks Debian's proot.",
            "skip=0",
            'for arg do',
            "  shift",
            '  if [ "$skip" = 1 ]; then skip=0; continue; fi',
            '  if [ "$arg" = "-k" ]; then skip=1; continue; fi',
            '  set -- "$@" "$arg"',
            "done",
            f'exec {shlex.quote(str(proot))} "$@"',
            "",
        ])
        if not self.wrapper_path.exists() or self.wrapper_path.read_text() != script:
            temporary = self.wrapper_path.with_suffix(".tmp")
            temporary.write_text(script)
            temporary.chmod(0o755)
            temporary.replace(self.wrapper_path)

    # images

    def tag_dir(self, image: ImageRef) -> Path:
        return self.home / "repos" / image.repo / image.tag

    def has_image(self, image: ImageRef) -> bool:
        """True when the image was pulled completely (an interrupted pull leaves a tag without layers)."""
        tag_dir = self.tag_dir(image)
        manifest = _read_json(tag_dir / "manifest")
        if not (tag_dir / "TAG").is_file() or not manifest:
            return False
        return all((tag_dir / digest).exists() and (tag_dir / digest).stat().st_size == size
                   for digest, size in _manifest_blobs(manifest))

    def login(self, image: ImageRef, user: str, password: str) -> None:
        args = ["login", f"--username={user}", "--password-stdin"]
        if image.registry_url:
            args.append(f"--registry={image.registry_url}")
        result = self.call(*args, stdin=password + "\n")
        if result.returncode != 0:
            raise ContainerError(f"udocker login to {image.registry} failed: {_last_error(result)}",
                                 f"check {USER_ENV} and {PASSWORD_ENV}")

    def pull(self, image: ImageRef, *, progress: ProgressCallback | None = None,
             retry_delays: Sequence[float] = (2.0, 10.0)) -> None:
        """Pull unless already complete. Transient failures are retried; the rest raise ContainerError."""
        self.ensure_tools()
        if self.has_image(image):
            return
        user, password = os.environ.get(USER_ENV, ""), os.environ.get(PASSWORD_ENV, "")
        if user and password:
            self.login(image, user, password)
        for attempt, delay in enumerate([*retry_delays, None]):
            result = self._pull_once(image, progress)
            if result.returncode == 0 and self.has_image(image):
                return
            error = diagnose_pull(image, user, password) or ContainerError(
                f"udocker could not pull {image}: {_last_error(result)}", f"see {self.log_path}")
            if not error.recoverable or delay is None:
                raise error
            log.warning("pull of %s failed (%s); retrying in %.0f s (attempt %d)", image, error.message, delay, attempt + 2)
            time.sleep(delay)

    def _pull_once(self, image: ImageRef, progress: ProgressCallback | None) -> subprocess.CompletedProcess[str]:
        args = ["pull"]
        if image.registry_url:
            args.append(f"--registry={image.registry_url}")
        args.append(image.name)
        if progress is None:
            return self.call(*args, timeout=COMMAND_TIMEOUT)
        watcher = _PullWatcher(self, image, progress)
        watcher.start()
        try:
            return self.call(*args, timeout=COMMAND_TIMEOUT)
        finally:
            watcher.finish()

    # containers

    def container_dir(self, name: str) -> Path | None:
        """The container's folder (holding ROOT), or None when no container has that name."""
        link = self.home / "containers" / name
        if link.is_symlink() and (link.resolve() / "ROOT").is_dir():
            return link.resolve()
        return None

    def create(self, name: str, image: ImageRef) -> Path:
        """Create the named container from a pulled image, or reuse it when it exists."""
        existing = self.container_dir(name)
        if existing is not None:
            return existing
        link = self.home / "containers" / name
        if link.is_symlink():  # a name left pointing at a removed container
            link.unlink()
        result = self.call("create", f"--name={name}", image.name, timeout=600)
        created = self.container_dir(name)
        if result.returncode != 0 or created is None:
            raise ContainerError(f"udocker could not create container {name} from {image.name}: {_last_error(result)}",
                                 f"see {self.log_path}")
        return created

    def env_file(self, container: str) -> Path:
        return self.home / "env" / f"{container}.env"

    def write_env_file(self, container: str, values: Mapping[str, str]) -> Path:
        """The variables, one KEY=VALUE a line, readable by the owner only."""
        if any("\n" in f"{key}{value}" or "=" in key for key, value in values.items()):
            raise ContainerError(f"an environment variable for {container} holds a newline or a bad name",
                                 "this is a bug: report which variable (not its value)")
        path = self.env_file(container)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(descriptor, 0o600)  # a file left by an older version may be wider
        with os.fdopen(descriptor, "w") as out:
            out.write("".join(f"{key}={value}\n" for key, value in values.items()))
        if self.user is not None:  # udocker reads it as that user
            entry = ensure_container_user()
            os.chown(path.parent, entry.pw_uid, entry.pw_gid)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def run_argv(self, container: str, spec: ContainerSpec) -> list[str]:
        args = ["run", "--nobanner"]
        for key, value in spec.env.items():
            args.append(f"--env={key}={value}")
        if spec.secret_env:
            args.append(f"--env-file={self.write_env_file(container, spec.secret_env)}")
        for volume in spec.volumes:
            args.append(f"--volume={volume}")  # one path: bound at the same place inside
        for host, inside in spec.binds:
            args.append(f"--volume={host}:{inside}")
        if spec.workdir:
            args.append(f"--workdir={spec.workdir}")
        if spec.entrypoint is not None:
            args.append(f"--entrypoint={spec.entrypoint}")
        return self.argv(*args, container, *spec.command)


def container_name(component: str, image: ImageRef) -> str:
    """One container per component and image: a new tag gets a new container, the same one is reused."""
    digest = hashlib.sha256(image.name.encode()).hexdigest()[:10]
    return f"mfcolab-{component}-{digest}"


# -- why a pull failed -----------------------------------------------------------------------------


def diagnose_pull(image: ImageRef, user: str = "", password: str = "", timeout: float = 15.0) -> ContainerError | None:
    """Ask the registry directly what udocker's one-line "pulling manifest" error meant.

    Uses HEAD on the manifest, which Docker Hub does not count as a pull. Returns None when the
    registry looks fine (the failure was something else).
    """
    registry = image.registry
    try:
        status, headers = _request("GET", f"{registry}/v2/", {}, timeout)
        auth: dict[str, str] = {}
        if status == 401:
            token_status, token = _bearer_token(headers.get("WWW-Authenticate", ""), image, user, password, timeout)
            if token_status == 401 and user:
                return ContainerError(f"the registry {registry} refused the login of {user!r} for {image.name}",
                                      f"check {USER_ENV} and {PASSWORD_ENV}")
            if token_status == 401:
                return ContainerError(f"the registry {registry} requires a login to pull {image.name}",
                                      f"set {USER_ENV} and {PASSWORD_ENV}")
            if token:
                auth = {"Authorization": f"Bearer {token}"}
        elif status >= 500:
            return _transient(f"the registry {registry} answered {status}")
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        status, _ = _request("HEAD", f"{registry}/v2/{image.remote_repo}/manifests/{image.tag}", {**auth, **accept}, timeout)
    except OSError as exc:
        return _transient(f"cannot reach the registry {registry}: {_reason(exc)}",
                          "check the network, or pass --registry with a reachable registry "
                          "(a plain-HTTP one needs http:// in front)")
    if status == 429:
        return ContainerError(
            f"the registry {registry} refused to pull {image.name}: rate limit reached "
            "(anonymous Docker Hub pulls are limited to 10 per hour per IP address, and notebook machines share addresses)",
            f"wait and retry, pull from the mirror with {MIRROR_HINT}, "
            f"or log in by setting {USER_ENV} and {PASSWORD_ENV} (a Docker Hub access token)",
        )
    if status in (401, 403, 404):
        return ContainerError(
            f"the image {image.name} does not exist in {registry} (or needs a login)",
            f"check the image name and tag, pass --registry, or set {USER_ENV} and {PASSWORD_ENV}",
        )
    if status >= 500:
        return _transient(f"the registry {registry} answered {status} for {image.name}")
    return None


def _transient(message: str, hint: str = "retry in a minute") -> ContainerError:
    error = ContainerError(message, hint)
    error.recoverable = True
    return error


def _bearer_token(challenge: str, image: ImageRef, user: str, password: str, timeout: float) -> tuple[int, str]:
    if not challenge.lower().startswith("bearer "):
        return 0, ""
    fields = dict(_challenge_fields(challenge[7:]))
    realm = fields.pop("realm", "")
    if not realm:
        return 0, ""
    fields.setdefault("scope", f"repository:{image.remote_repo}:pull")
    query = urllib.parse.urlencode(fields)
    headers = {}
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{realm}?{query}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except ValueError:
        return 200, ""
    return 200, str(body.get("token") or body.get("access_token") or "")


def _challenge_fields(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            pairs.append((key.strip(), value.strip().strip('"')))
    return pairs


def _request(method: str, url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, Mapping[str, str]]:
    request = urllib.request.Request(url, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(getattr(reason, "strerror", None) or reason)


def _last_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or [f"exit code {result.returncode}"])[-1]


# -- pull progress ---------------------------------------------------------------------------------


class _PullWatcher:
    """Reports a pull's progress from what udocker writes: the manifest first, then one file per layer."""

    def __init__(self, udocker: Udocker, image: ImageRef, callback: ProgressCallback, interval: float = 0.2) -> None:
        self.udocker = udocker
        self.image = image
        self.callback = callback
        self.interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pull {image.name}", daemon=True)
        self._last: PullProgress | None = None

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self._done.set()
        self._thread.join(5)
        final = self._measure()
        self._emit(dataclasses.replace(final, finished=True))

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._emit(self._measure())

    def _measure(self) -> PullProgress:
        manifest = _read_json(self.udocker.tag_dir(self.image) / "manifest")
        blobs = _manifest_blobs(manifest) if manifest else []
        layers = self.udocker.home / "layers"
        sizes = [min(_size(layers / digest), size) for digest, size in blobs]
        return PullProgress(
            image=self.image.name, done=sum(sizes), total=sum(size for _, size in blobs),
            layers_done=sum(1 for (_, size), got in zip(blobs, sizes, strict=True) if got == size), layers_total=len(blobs),
        )

    def _emit(self, progress: PullProgress) -> None:
        if progress != self._last:
            self._last = progress
            try:
                self.callback(progress)
            except Exception:  # a display must never break a pull
                log.exception("pull progress display failed")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _manifest_blobs(manifest: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(digest, size) of every blob udocker downloads for a schema-2 or OCI manifest: layers and config."""
    entries = list(manifest.get("layers") or [])
    config = manifest.get("config")
    if isinstance(config, dict) and config.get("digest") and config not in entries:
        entries.append(config)
    return [(str(entry["digest"]), int(entry.get("size", 0))) for entry in entries if isinstance(entry, dict)
            and "digest" in entry]


def print_progress(stream: Any = None) -> ProgressCallback:
    """A plain progress display: one line per tenth of the download (and one at the end)."""
    out = stream or sys.stderr
    shown: dict[str, int] = {}

    def show(progress: PullProgress) -> None:
        if not progress.total:
            return
        step = progress.done * 10 // progress.total
        if progress.finished or shown.get(progress.image, -1) < step:
            shown[progress.image] = step
            out.write(f"pulling {progress.image}: {progress.done / 1e6:.1f} of {progress.total / 1e6:.1f} MB, "
                      f"layer {progress.layers_done} of {progress.layers_total}{' done' if progress.finished else ''}\n")
            out.flush()

    return show


# -- leftovers of an earlier run -------------------------------------------------------------------


def container_processes(container_dir: Path) -> list[int]:
    """Processes running in (or running) the container at `container_dir`, found through /proc.

    Matches proot's command line (it names the container's ROOT) and the environment udocker
    gives the containerized processes (`container_root=...`). Covers what a killed supervisor
    or a killed udocker process left behind.
    """
    marker = str(container_dir.resolve()).encode()
    return find_processes(lambda cmdline, environ: marker in cmdline or b"container_root=" + marker in environ)


def kill_container_processes(container_dir: Path, timeout: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, whatever still runs in the container. Returns the pids found."""
    pids = container_processes(container_dir)
    stop_processes(pids, timeout)
    return pids


# -- the supervised component ----------------------------------------------------------------------


class ContainerComponent(ProcessComponent):
    """A service from an image, run detached under udocker, supervised like any other process.

    `prepare()` (tools, pull, create) is idempotent and quick once done; `start()` calls it,
    so a restart is just `start()` again. Call `prepare(progress)` up front to show a first pull.
    """

    start_timeout = 300.0  # the first start of a Python service under proot imports a lot
    stop_timeout = 15.0

    def __init__(self, spec: ContainerSpec, udocker: Udocker, log_dir: Path, *, registry: str = "") -> None:
        super().__init__(spec.name, log_dir)
        self.spec = spec
        self.udocker = udocker
        self.image = resolve_image(spec.image, registry)
        self.container = container_name(spec.name, self.image)
        self._container_dir: Path | None = None

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def container_dir(self) -> Path | None:
        return self._container_dir or self.udocker.container_dir(self.container)

    def prepare(self, progress: ProgressCallback | None = None) -> Path:
        """Tools installed, image pulled, container created; returns the container's folder."""
        self.udocker.ensure_tools()
        if self.udocker.container_dir(self.container) is None:
            self.udocker.pull(self.image, progress=progress)
        self._container_dir = self.udocker.create(self.container, self.image)
        return self._container_dir

    def preflight(self) -> None:
        # The containers share the host network: a taken port fails here, before a pull or a start.
        require_free_port(self.spec.port, self.name, self.spec.port_flag)

    def fetch(self, progress: Progress) -> None:
        progress(f"preparing {self.name} from {self.image} (a first pull can take minutes)")
        self.prepare(print_progress())

    def before_spawn(self) -> None:
        existing = self.udocker.container_dir(self.container)
        if existing is not None:  # what a killed run may have left holding the port
            leftovers = kill_container_processes(existing)
            if leftovers:
                log.warning("%s: stopped %d process(es) left from an earlier run: %s", self.name, len(leftovers), leftovers)
        require_free_port(self.spec.port, self.name, self.spec.port_flag)
        self.prepare()
        for volume in self.spec.volumes:
            volume.mkdir(parents=True, exist_ok=True)

    def make_process(self) -> ManagedProcess:
        argv = self.udocker.run_argv(self.container, self.spec)
        return ManagedProcess(self.name, argv, self.log_path, env=self.udocker.env(), user=self.udocker.user)

    def healthy(self) -> bool:
        if not self.alive():
            return False
        if self.spec.health_path is None:
            return port_answers(self.spec.port)
        try:
            url = f"http://127.0.0.1:{self.spec.port}{self.spec.health_path}"
            with urllib.request.urlopen(url, timeout=1) as response:
                return 200 <= int(response.status) < 300
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        # A containerized process that left the process group (a daemon, a setsid) still goes.
        if self.container_dir is not None:
            kill_container_processes(self.container_dir)

    def info(self) -> dict[str, Any]:
        return {"image": str(self.image), "container": self.container, "udocker_dir": str(self.udocker.home),
                "user": self.udocker.user or pwd.getpwuid(os.geteuid()).pw_name}
