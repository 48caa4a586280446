"""Small files read from the shared root folder, which every notebook that mounts it can write.

`open_regular` opens one only if it is what it should be: a regular file, reached without a
symbolic link as its last step; `read_regular` also holds it to the caller's size limit. A FIFO
does not block the reader (it is opened non-blocking and refused), a link to /dev/zero or to a
root-only file is not followed, and an oversized file is refused without being read. A refusal is a `RefusedFile`,
an OSError, so callers that already treat an unreadable file as such stay as they are.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class RefusedFile(OSError):
    """A file in the shared folder that is not a small regular file; it is left as it is."""


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file reached without a symbolic link as its
    last step (RefusedFile otherwise; FileNotFoundError when it is missing). Never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RefusedFile(errno.ELOOP, "it is a symbolic link", str(path)) from exc
        raise
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise RefusedFile(errno.EINVAL, "it is not a regular file", str(path))
    os.set_blocking(fd, True)  # a regular file: ordinary reads from here on
    return handle


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The contents of the regular file `path`, at most `max_bytes` of them (RefusedFile otherwise;
    FileNotFoundError when it is missing)."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise RefusedFile(errno.EFBIG, f"it has {size} bytes, more than {max_bytes}", str(path))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while being read
        raise RefusedFile(errno.EFBIG, f"it has more than {max_bytes} bytes", str(path))
    return data
