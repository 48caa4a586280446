"""Fetch one file over HTTP(S), check its SHA-256, and install it under its final name.

The body streams into `<dest>.<digest prefix>.part` next to the destination. A broken
transfer keeps that partial file and the next attempt asks for the rest (HTTP Range); a
server that ignores Range sends the whole file again and the partial is replaced. Only a
file whose digest matches is renamed to `dest`, so `dest` either does not exist or is
complete. A mismatch deletes the partial: nothing half-checked is ever left installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from .errors import TunnelError
from .files import put_in_place

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
# Statuses worth another attempt; any other 4xx is final (a wrong URL does not heal).
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


UNCHECKED = "unchecked"  # names the partial of a download whose digest is not known yet


class _Retryable(Exception):
    """An attempt failed in a way another attempt may cure."""


def download_file(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    attempts: int = 4,
    timeout: float = 30.0,
    progress: bool = True,
    mode: int = 0o755,
    backoff: float = 1.0,
    max_bytes: int | None = None,
) -> Path:
    """Download `url` to `dest` if its SHA-256 is `sha256`; resume or retry up to `attempts` times.

    `sha256=None` accepts whatever arrives complete (the caller records its digest for next time).
    A body longer than `max_bytes` is refused and its partial deleted.
    Raises TunnelError (with a hint) when the file cannot be fetched or does not match.
    """
    expected = UNCHECKED if sha256 is None else sha256.strip().lower()
    if sha256 is not None and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
        raise TunnelError(f"not a SHA-256 digest: {sha256!r}", "give the 64-hex-digit digest published with the file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest, expected)
    last_problem = ""
    for attempt in range(1, attempts + 1):
        try:
            pieced = _fetch_into(url, part, timeout=timeout, progress=progress, max_bytes=max_bytes)
        except _Retryable as exc:
            last_problem = str(exc)
            if attempt < attempts:  # the last failure is the raised error's to tell
                log.warning("download of %s failed (attempt %d of %d): %s; trying again", url, attempt, attempts, exc)
                time.sleep(backoff * attempt)
            continue
        actual = file_sha256(part) if sha256 is not None else UNCHECKED
        if actual == expected:
            os.chmod(part, mode)
            put_in_place(part, dest)
            return dest
        part.unlink(missing_ok=True)
        if pieced and attempt < attempts:
            # A partial left by an earlier run may have been the bad piece: one clean try decides.
            last_problem = "checksum mismatch after a resumed download"
            log.warning("%s: checksum mismatch after resuming; downloading it whole", url)
            continue
        raise TunnelError(
            f"checksum mismatch for {url}: expected SHA-256 {expected}, got {actual}; the file was deleted",
            "retry later; if it persists, install the binary yourself and pass its path",
        )
    tries = "" if attempts == 1 else f" after {attempts} attempts"
    raise TunnelError(
        f"could not download {url}{tries}: {last_problem}",
        "check this machine's internet access, or install the binary yourself and pass its path",
    )


def partial_path(dest: Path, sha256: str) -> Path:
    """Where the body of `dest` accumulates; named after the expected digest, so a partial of another file is never resumed."""
    return dest.with_name(f"{dest.name}.{sha256[:12]}.part")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_into(url: str, part: Path, *, timeout: float, progress: bool, max_bytes: int | None = None) -> bool:
    """One attempt: append the rest of the body to `part` (or rewrite it); True if it appended.

    Raises _Retryable or TunnelError.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code == 416 and have:
                # The partial is already as long as (or longer than) the file: start over.
                part.unlink(missing_ok=True)
                raise _Retryable("server refused the resume range; starting over")
            _check_status(url, response)
            resumed = response.status_code == 206 and _range_start(response) == have
            if have and not resumed:
                log.info("server ignored the resume request for %s; downloading it whole", url)
            offset = have if resumed else 0
            total = _expected_total(response, offset)
            _check_size(url, part, total, max_bytes)
            with open(part, "ab" if resumed else "wb") as out, _progress_bar(url, total, offset, progress) as advance:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    advance(len(chunk))
                    _check_size(url, part, out.tell(), max_bytes)
            if total is not None and part.stat().st_size != total:
                raise _Retryable(f"got {part.stat().st_size} of {total} bytes")
            return resumed
    except requests.RequestException as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc


def _check_status(url: str, response: requests.Response) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    if status in RETRYABLE_STATUSES:
        raise _Retryable(f"HTTP {status} {response.reason}")
    raise TunnelError(
        f"download of {url} failed: HTTP {status} {response.reason}",
        "check the release tag and architecture, or install the binary yourself and pass its path",
    )


def _check_size(url: str, part: Path, size: int | None, max_bytes: int | None) -> None:
    if max_bytes is not None and size is not None and size > max_bytes:
        part.unlink(missing_ok=True)
        raise TunnelError(
            f"download of {url} is larger than the {max_bytes:,} bytes allowed for it; the partial was deleted",
            "check the URL",
        )


def _range_start(response: requests.Response) -> int | None:
    """The first byte offset of a 206 answer ("Content-Range: bytes START-END/TOTAL")."""
    value = response.headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    if unit != "bytes" or "-" not in spec:
        return None
    start = spec.split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _expected_total(response: requests.Response, offset: int) -> int | None:
    length = response.headers.get("Content-Length", "")
    return offset + int(length) if length.isdigit() else None


@contextlib.contextmanager
def _progress_bar(url: str, total: int | None, done: int, show: bool) -> Iterator[Callable[[int], None]]:
    if not show:
        yield lambda _n: None
        return
    from rich.console import Console  # only when a bar is drawn: rich takes a tenth of a second to import
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total, completed=done)
        yield lambda n: bar.advance(task, n)

