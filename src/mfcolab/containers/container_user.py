"""The unprivileged system user the upstream containers run as (when mfcolab runs as root).

udocker's `--user` only changes the uid proot pretends to have: the processes stay root. So
mfcolab runs udocker itself (pull, create, run) as the system user `mfcolab-box`, which owns
the udocker folder and nothing else. What that user can and cannot reach:

- the container's files, its env file (its own database login), the datastore view and the
  shim (datastore_view.py): yes, read; the view and the shim are not writable by it;
- the access key, the database password file and the snapshots: no (0600 root; on Drive
  everything is root 0600/0700);
- the real datastore: not bound into any container; through /proc/self/root (proot is no
  jail) only what is world-readable, and nothing writable, since the files belong to root.

udocker runs with a Python the user can execute (`udocker_python`); nothing under a home
folder is opened to it. When mfcolab itself runs unprivileged there is nobody to switch to: the containers run as
the same user, and only the view and the shim protect the datastore.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import udocker

from ..errors import ConfigError, MissingBinaryError
from ..supervisor.process import group_exists

SYSTEM_USER = "mfcolab-box"
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


def container_user() -> str | None:
    """The user the containers run as: None means the current user."""
    return SYSTEM_USER if os.geteuid() == 0 else None


def ensure_container_user(name: str = SYSTEM_USER) -> pwd.struct_passwd:
    """The system user's entry, created on first use (no home, no shell, its own group)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise MissingBinaryError("useradd is missing, so the containers' system user cannot be created",
                                 "apt-get install passwd")
    group = ["-g", name] if group_exists(name) else ["--user-group"]  # a group left by userdel
    result = subprocess.run(["useradd", "--system", *group, "--no-create-home", "--shell", "/usr/sbin/nologin",
                             name], check=False, capture_output=True, text=True)
    if result.returncode not in (0, 9):  # 9: created meanwhile by another process
        raise MissingBinaryError(f"useradd {name} failed: {result.stderr.strip()}",
                                 "check /etc/passwd, or run mfcolab as an ordinary user")
    return pwd.getpwnam(name)


def give_to_container_user(folder: Path) -> None:
    """`folder` (recursively) owned by the container user, and reachable by it from /."""
    entry = ensure_container_user()
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".mfcolab-owner"  # written last: a folder given away completely
    if folder.stat().st_uid != entry.pw_uid or not marker.exists():
        for path, dirs, files in os.walk(folder):
            os.chown(path, entry.pw_uid, entry.pw_gid)
            for name in [*dirs, *files]:
                os.chown(os.path.join(path, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        marker.touch()
        os.chown(marker, entry.pw_uid, entry.pw_gid)
    make_reachable(folder.parent)


def make_reachable(path: Path) -> None:
    """Search permission for others on `path` and every folder above it; never on a home folder."""
    homes = {Path(entry.pw_dir) for entry in pwd.getpwall() if entry.pw_dir not in ("", "/")}
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        if folder in homes:
            raise ConfigError(f"the containers' user ({SYSTEM_USER}) cannot reach {path}: it is inside the home folder"
                              f" {folder}, which mfcolab does not open to other users",
                              f"--local /var/lib/mfcolab/local (or any --local outside {folder})")
        folder.chmod(mode | stat.S_IXOTH)


def udocker_python() -> tuple[str, str]:
    """(a Python the container user can run, the folder to import udocker from).

    udocker needs only the standard library, so any Python 3 will do: this one when others may
    run it (Colab: /usr/bin/python3), else the system's (this one may live in a home folder).
    """
    package = Path(udocker.__file__).resolve().parent
    if not _open_to_others(package / "__init__.py"):
        raise ConfigError(f"the containers' user ({SYSTEM_USER}) cannot read udocker at {package}",
                          "install mfcolab where other users can read it (not in a home folder)")
    if _open_to_others(Path(sys.executable).resolve()) and _open_to_others(Path(os.__file__).resolve()):
        return sys.executable, str(package.parent)
    for candidate in SYSTEM_PYTHONS:
        if Path(candidate).is_file() and _open_to_others(Path(candidate).resolve()):
            return candidate, str(package.parent)
    raise MissingBinaryError(f"no Python that the containers' user ({SYSTEM_USER}) can run",
                             "apt-get install python3")


def _open_to_others(path: Path) -> bool:
    """Others may read (and run) `path` and search every folder above it."""
    try:
        if path.stat().st_mode & stat.S_IROTH == 0:
            return False
        return all(folder.stat().st_mode & stat.S_IXOTH for folder in path.parents)
    except OSError:
        return False
