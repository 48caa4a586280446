"""Read-only, path-aware access to the Metaflow local datastore under `<root>/datastore`.

Every task records the datastore root it wrote to (`ds-root` metadata, `:root:` artifact
locations). The machine that wrote it may have seen the shared folder at another path (a
VM, another mount point), so a recorded root is mapped onto this machine's
`<root>/datastore` (`DatastoreRoots.local_root`). The datastore is written by every notebook
that mounts the folder, so every name read from it or from the database is hostile: a
file is opened only if its real path (symlinks resolved) is inside the datastore, only if it
is a regular file, and only for reading (`O_NOATIME` where allowed, so viewing does not even
change access times). Nothing here creates, moves or modifies anything.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..service.http import ApiError

LOCAL_DIR = ".metaflow"  # what Metaflow appends to its local sysroot
CARDS_DIR = "mf.cards"  # where cards land under a task's ds-root


class DatastoreRoots:
    def __init__(self, datastore_dir: Path) -> None:
        self.base = datastore_dir
        self._real_base = os.path.realpath(datastore_dir)

    def local_root(self, recorded: str | None) -> Path:
        """The folder on this machine that holds what a task wrote under `recorded`.

        The recorded root itself when it is inside this machine's datastore; otherwise the part
        after its last `datastore` component, under ours (`/mnt/x/datastore/.metaflow` becomes
        `<root>/datastore/.metaflow`); a root without that component maps to
        `<root>/datastore/.metaflow` when it ends in `.metaflow`, else to `<root>/datastore`."""
        if recorded and os.path.isabs(recorded) and self._inside(os.path.realpath(recorded)):
            return Path(recorded)
        parts = Path(recorded or "").parts
        name = self.base.name
        if name in parts:
            last = len(parts) - 1 - parts[::-1].index(name)
            return self.base.joinpath(*_safe_parts(parts[last + 1:]))
        if parts and parts[-1] == LOCAL_DIR:
            return self.base / LOCAL_DIR
        return self.base

    def _inside(self, real: str) -> bool:
        return real == self._real_base or real.startswith(self._real_base + os.sep)

    def path(self, root: Path, *names: str) -> Path:
        """`root/names...`, refusing names that could step out of their folder."""
        return root.joinpath(*_safe_parts(names))

    @contextmanager
    def open(self, path: Path) -> Iterator[BinaryIO]:
        """Open a regular file inside the datastore for reading; FileNotFoundError otherwise."""
        real = os.path.realpath(path)
        if not self._inside(real):
            raise FileNotFoundError(str(path))
        fd = _open_quietly(real)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FileNotFoundError(str(path))
            handle = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with handle:
            yield handle

    def size(self, path: Path) -> int | None:
        """The size of a regular file inside the datastore, or None."""
        try:
            with self.open(path) as handle:
                return os.fstat(handle.fileno()).st_size
        except OSError:
            return None

    def read(self, path: Path, limit: int) -> bytes | None:
        """A whole file, or None when it is missing; a file over `limit` bytes is refused."""
        try:
            with self.open(path) as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > limit:
                    raise ApiError(413, f"{path.name} is {size} bytes, more than the {limit} this view reads")
                return handle.read(limit + 1)[:limit]
        except OSError:
            return None

    def list_files(self, folder: Path) -> list[str]:
        """Names of the regular files in a folder inside the datastore (empty when missing)."""
        real = os.path.realpath(folder)
        if not self._inside(real):
            return []
        try:
            with os.scandir(real) as entries:
                return sorted(entry.name for entry in entries if entry.is_file(follow_symlinks=False))
        except OSError:
            return []


def _safe_parts(parts: tuple[str, ...] | list[str]) -> list[str]:
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\x00" in part:
            raise ApiError(404, f"no such file in the datastore: {part!r} is not a plain name")
    return list(parts)


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _open_quietly(path: str) -> int:
    """Open without touching the access time when the kernel lets us (owner or root)."""
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.open(path, _READ_FLAGS | noatime)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
    return os.open(path, _READ_FLAGS)
