"""Make the outbox visible in the root folder: one rsync per mirror cycle.

A cycle prepares everything it ships in a local outbox laid out like `<root>/snapshots/`
(gzipped WAL pieces, a base backup's files, its generation record). `Transport.ship` then runs
one rsync that copies the outbox into the root folder: rsync writes each file under a
temporary name (`.<name>.XXXXXX`) in its final folder, fsyncs it (`--fsync`), and renames it
when complete. No links, no owners, no modes, no directory renames. Afterwards every file is
checked against its local size and the destination folders are synced, so the caller can
write the manifest that names them. The manifest itself is not shipped here.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from ..errors import MissingBinaryError, SnapshotError
from ..files import sync_folder
from ..supervisor.process import descendants

log = logging.getLogger(__name__)

RSYNC_HINT = "apt-get install rsync"
MIN_TIMEOUT_SECONDS = 300.0  # a stalled root folder fails the cycle after this long ...
MIN_RATE = 1_000_000  # ... plus one second per MB shipped
FILE_MODE = 0o600  # what rsync gives its temporary files: outbox files match it, so rsync never chmods

_TRANSFERRED_RE = re.compile(r"Number of regular files transferred:\s*([\d,.]+)")
_BYTES_RE = re.compile(r"Total transferred file size:\s*([\d,.]+) bytes")


@dataclasses.dataclass(frozen=True)
class Shipped:
    files: int
    bytes: int


class Outbox:
    """A local folder laid out like `dest` (the snapshots folder). Callers name files by their
    final path under `dest`; the outbox keeps them at the same relative path."""

    def __init__(self, folder: Path, dest: Path) -> None:
        self.folder = folder
        self.dest = dest

    def local(self, final: Path) -> Path:
        path = self.folder / final.relative_to(self.dest)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_gzip(self, data: bytes, final: Path) -> int:
        """`data`, gzipped (fast), to ship as `final`. Returns its size."""
        return self._write(final, [gzip.compress(data, compresslevel=1, mtime=0)])

    def add_bytes(self, data: bytes, final: Path) -> int:
        return self._write(final, [data])

    def add_moved(self, source: Path, final: Path) -> int:
        """Move a local file into the outbox (same file system: a rename)."""
        path = self.local(final)
        try:
            os.replace(source, path)
        except OSError:
            shutil.copyfile(source, path)
            source.unlink()
        os.chmod(path, FILE_MODE)
        return path.stat().st_size

    def files(self) -> list[Path]:
        """Every file waiting, relative to the outbox. Refuses anything that is not a regular file."""
        found = []
        for parent, dirs, names in os.walk(self.folder):
            for name in dirs + names:
                path = Path(parent, name)
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode):
                    continue
                if not stat.S_ISREG(mode):
                    raise SnapshotError(f"{path} is not a regular file; the root folder takes no links", "report this as a bug")
                found.append(path.relative_to(self.folder))
        return sorted(found)

    def discard(self, final: Path) -> None:
        """Take a folder (or file) back out of the outbox."""
        path = self.folder / final.relative_to(self.dest)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _write(self, final: Path, chunks: object) -> int:
        path = self.local(final)
        written = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with open(fd, "wb") as handle:
            for chunk in chunks:  # type: ignore[attr-defined]
                handle.write(chunk)
                written += len(chunk)
        return written


@dataclasses.dataclass(frozen=True)
class Rsync:
    path: str
    has_fsync: bool  # rsync >= 3.2.4

    @classmethod
    def find(cls) -> Rsync:
        """The rsync on PATH; MissingBinaryError if there is none."""
        path = shutil.which("rsync")
        if path is None:
            raise MissingBinaryError("rsync is not installed; the mirror ships snapshots with it", RSYNC_HINT)
        try:
            usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30, env=_c_locale()).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MissingBinaryError(f"{path} does not run: {exc}", RSYNC_HINT) from exc
        has_fsync = "--fsync" in usage
        if not has_fsync:
            log.warning("%s has no --fsync (it is older than 3.2.4): mfcolab syncs each shipped file itself"
                        " before the manifest names it; `%s` gets a newer one", path, RSYNC_HINT)
        return cls(path, has_fsync)


class Transport:
    """Runs rsync as a child in the caller's process group (killing the stack's groups kills it)."""

    def __init__(self, rsync: Rsync | None = None) -> None:
        self.rsync = rsync or Rsync.find()
        self._process: subprocess.Popen[str] | None = None

    def argv(self, source: Path, dest: Path) -> list[str]:
        # -r without -a: no links, owners, groups, modes or times. -I: every outbox file is new
        # content, never skip one for matching size and time. Local copies are whole-file already.
        options = ["-r", "-I", "--whole-file", "--stats"]
        if self.rsync.has_fsync:
            options.append("--fsync")
        return [self.rsync.path, *options, f"{source}/", f"{dest}/"]

    def ship(self, outbox: Outbox) -> Shipped:
        """Copy every outbox file into the destination; when this returns they are all there,
        complete and synced. Raises SnapshotError otherwise (nothing names them yet)."""
        files = outbox.files()
        if not files:
            return Shipped(0, 0)
        expected = {rel: (outbox.folder / rel).stat().st_size for rel in files}
        outbox.dest.mkdir(parents=True, exist_ok=True)
        timeout = MIN_TIMEOUT_SECONDS + sum(expected.values()) / MIN_RATE
        output = self._run(self.argv(outbox.folder, outbox.dest), timeout)
        shipped = _parse_stats(output)
        self._verify(outbox.dest, expected)
        if not self.rsync.has_fsync:
            for rel in files:
                _sync_file(outbox.dest / rel)
        for folder in _folders(outbox.dest, files):
            sync_folder(folder)
        return shipped

    def abort(self) -> None:
        """Kill a running rsync and its helpers (it forks a receiver and a generator)."""
        process = self._process
        if process is not None and process.poll() is None:
            _kill_tree(process.pid)

    def _run(self, argv: list[str], timeout: float) -> str:
        """rsync's statistics (stdout); its errors (stderr) become the failure's reason."""
        started = time.monotonic()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd="/", env=_c_locale())
        self._process = process
        try:
            output, errors = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process.pid)
            process.communicate()
            raise SnapshotError(f"rsync into the root folder did not finish within {timeout:.0f} s",
                                "check that the root folder (Drive) responds") from None
        finally:
            self._process = None
        if process.returncode != 0:
            reason = "; ".join(line.strip() for line in errors.splitlines()[:3] if line.strip())[:500]
            raise SnapshotError(f"rsync into the root folder failed (exit {process.returncode}): {reason or 'killed'}",
                                "check that the root folder is writable and not full")
        log.debug("rsync shipped in %.2f s", time.monotonic() - started)
        return output

    def _verify(self, dest: Path, expected: dict[Path, int]) -> None:
        for rel, size in expected.items():
            try:
                actual = (dest / rel).stat().st_size
            except OSError as exc:
                raise SnapshotError(f"rsync reported success but {dest / rel} is missing: {exc}", "retried next cycle") from exc
            if actual != size:
                raise SnapshotError(f"{dest / rel} has {actual} bytes after rsync, {size} expected", "retried next cycle")


def _parse_stats(output: str) -> Shipped:
    files = _TRANSFERRED_RE.search(output)
    size = _BYTES_RE.search(output)
    if files is None or size is None:
        raise SnapshotError(f"rsync printed no statistics: {output.strip()[-300:]}", "report this with `rsync --version`")
    return Shipped(_number(files.group(1)), _number(size.group(1)))


def _number(text: str) -> int:
    return int(re.sub(r"[,.]", "", text))


def _folders(dest: Path, files: list[Path]) -> list[Path]:
    """Every destination folder a shipped file lives in, and the folders above them: the new
    entries they hold must be durable before the manifest names the files."""
    folders = {dest}
    for rel in files:
        for parent in rel.parents:
            folders.add(dest / parent)
    return sorted(folders, key=lambda p: len(p.parts), reverse=True)


def _sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _kill_tree(pid: int) -> None:
    for target in [*descendants([pid]), pid]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _c_locale() -> dict[str, str]:
    """rsync's statistics in a parseable form (no locale-specific digit grouping)."""
    return {**os.environ, "LC_ALL": "C"}
