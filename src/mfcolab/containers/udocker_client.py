"""The udocker command line (the PyPI package, run as `python -m udocker.maincmd`): tools, pulls,
containers, and what runs in one.

udocker keeps everything in one folder, UDOCKER_DIR = <local>/udocker: its tools (proot), pulled
images, created containers. That folder needs symlinks, so it never lives on Drive. What this
module adds on top of udocker:

- tools: udocker's own download on first use, or a system proot (`--proot PATH`) through a
  wrapper that drops udocker's `-k <kernel>` argument (Debian's proot 5.x breaks the dynamic
  loader of every glibc program when asked to emulate a kernel release);
- pulls that show progress (pulls.py), retry transient failures, and say why they failed
  (registry.py), which udocker itself reports as one "Error: pulling manifest" line;
- containers created once and reused by name, run with secrets in a 0600 env file;
- the processes left in a container by a killed run, found through /proc.

Containers share the host network (proot has no network namespace and Debian's proot ignores
`-p`), so every service gets its own 127.0.0.1 port through its own environment variables.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ContainerError, MissingBinaryError
from ..files import write_atomic
from ..logfiles import open_log
from ..settings import Settings
from ..supervisor.process import as_user, find_processes, stop_processes
from .container_user import container_user, ensure_container_user, give_to_container_user, udocker_python
from .images import ImageRef
from .pulls import ProgressCallback, PullWatcher, manifest_blobs, read_json
from .registry import PASSWORD_ENV, USER_ENV, diagnose_pull

log = logging.getLogger(__name__)

PROOT_WRAPPER = "mfcolab-proot"
COMMAND_TIMEOUT = 1800.0  # a pull of a large image on a slow link


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


class Udocker:
    """The udocker command line with mfcolab's folder, tools and registry credentials."""

    def __init__(self, home: Path, *, proot: str = "", log_path: Path | None = None, user: str | None = None) -> None:
        self.home = home
        self.proot = proot
        self.log_path = log_path or home / "udocker.log"
        self.user = user  # a system user every udocker command runs as (None: this process' user)
        self._tools_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Udocker:
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
            write_atomic(self.wrapper_path, [script.encode()], 0o755, durable=False)

    # images

    def tag_dir(self, image: ImageRef) -> Path:
        return self.home / "repos" / image.repo / image.tag

    def has_image(self, image: ImageRef) -> bool:
        """True when the image was pulled completely (an interrupted pull leaves a tag without layers)."""
        tag_dir = self.tag_dir(image)
        manifest = read_json(tag_dir / "manifest")
        if not (tag_dir / "TAG").is_file() or not manifest:
            return False
        return all((tag_dir / digest).exists() and (tag_dir / digest).stat().st_size == size
                   for digest, size in manifest_blobs(manifest))

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
        watcher = PullWatcher(image.name, self.tag_dir(image) / "manifest", self.home / "layers", progress)
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


def _last_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or [f"exit code {result.returncode}"])[-1]


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
