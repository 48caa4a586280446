"""Files that appear whole or not at all, in folders others may read at any moment.

    write_atomic(dest, chunks)   the product's one atomic write: a temporary name beside `dest`
                                 (`.<name>.tmp-<pid>-<random>`), written, fsynced, renamed over
                                 `dest` (put_in_place), then the folder synced
    put_in_place(temp, dest)     the last two steps for a file written some other way (a download)

The root folder is Google Drive on Colab: the rename is what makes a file visible there; a
folder fsync may not be supported and is then skipped. A killed writer leaves only a
temporary name behind, recognised by `is_temp_name` (and removed by the snapshot layout's
`remove_stale_temps`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".tmp-"
CHUNK = 1024 * 1024


def temp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(3)}")


def is_temp_name(name: str) -> bool:
    """A name `temp_name` gives: a dot, then the final name, then the mark."""
    return name.startswith(".") and TEMP_MARK in name


def write_atomic(dest: Path, chunks: Iterable[bytes], mode: int | None = None, *, durable: bool = True) -> int:
    """Write `chunks` to a temporary name beside `dest`, sync it, rename it over `dest`, sync the
    folder; returns the bytes written. `mode` (0o600 for a secret) is the temporary file's mode
    from its creation on. `durable=False` skips both syncs, for local copies that can be made again."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(dest)
    written = 0
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)  # the umask may have taken bits the mode asks for
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        put_in_place(temp, dest, durable=durable)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return written


def put_in_place(temp: Path, dest: Path, *, durable: bool = True) -> None:
    """Rename a complete file over `dest` (same folder) and sync the folder."""
    os.replace(temp, dest)
    if durable:
        sync_folder(dest.parent)


def sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # FUSE folders (Drive) may not support it; the rename is what makes the file visible
    finally:
        os.close(fd)


def read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk
