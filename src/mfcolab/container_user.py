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

When mfcolab itself runs unprivileged there is nobody to switch to: the containers run as
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

from .errors import MissingBinaryError
from .postgres import _make_traversable, _open_path_for_others, running_as_root

SYSTEM_USER = "mfcolab-box"


def container_user() -> str | None:
    """The user the containers run as: None means the current user."""
    return SYSTEM_USER if running_as_root() else None


def ensure_container_user() -> pwd.struct_passwd:
    """The system user's entry, created on first use (no home, no shell, its own group)."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise MissingBinaryError("useradd is missing, so the containers' system user cannot be created",
                                 "apt-get install passwd")
    result = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                             SYSTEM_USER], check=False, capture_output=True, text=True)
    if result.returncode not in (0, 9):  # 9: created meanwhile by another process
        raise MissingBinaryError(f"useradd {SYSTEM_USER} failed: {result.stderr.strip()}",
                                 "check /etc/passwd, or run mfcolab as an ordinary user")
    return pwd.getpwnam(SYSTEM_USER)


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
    _make_traversable(folder.parent)


def open_udocker_for_container_user() -> None:
    """The user runs udocker with this Python: its install and udocker's package must be readable.

    On Colab both are under /usr; elsewhere Python may live under /root (pyenv), as Postgres'
    binaries may (postgres.ensure_server_user does the same for them).
    """
    import udocker  # type: ignore[import-untyped]

    for install, probes in ((Path(sys.base_prefix), (Path(sys.executable).resolve(), Path(os.__file__).resolve())),
                            (Path(udocker.__file__).resolve().parent, (Path(udocker.__file__).resolve(),))):
        if not all(_open_to_others(probe) for probe in probes):  # never walk an already open /usr
            _open_path_for_others(install)


def _open_to_others(path: Path) -> bool:
    """Others may read `path` and search every folder above it."""
    try:
        if path.stat().st_mode & stat.S_IROTH == 0:
            return False
        return all(folder.stat().st_mode & stat.S_IXOTH for folder in path.parents)
    except OSError:
        return False
