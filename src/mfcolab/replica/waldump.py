"""The time of the newest transaction in a folder of WAL segments, read by `pg_waldump`.

The segments come from the shared root folder, which any notebook that mounts it can write, so
the parser that reads them is treated as exposed: it runs as the Postgres server user (never as
root), is stopped after `TIME_LIMIT` seconds, and its output is read line by line (at most
`MAX_LINE` bytes at a time, only the last commit time kept). A failure is a SnapshotError naming
the folder; the normal end of the WAL (no valid record after the last one) is not a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

from .. import postgres
from ..errors import SnapshotError
from ..settings import Settings
from ..supervisor.process import as_user

TIME_LIMIT = 300.0
MAX_LINE = 4096
_COMMIT_TIME = re.compile(rb"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
# What pg_waldump says when it reaches the end of the WAL: the records before it are complete.
_END_OF_WAL = b"error in WAL record at"
_HINT = "restore without --until, or an older --generation (mfcolab restore --list)"


def last_transaction_time(settings: Settings, wal_dir: Path, segments: list[str],
                          time_limit: float = TIME_LIMIT) -> datetime | None:
    """The end time of the newest committed or aborted transaction in `segments` (names in
    `wal_dir`, oldest first); None when they hold none. `wal_dir` is handed to the server user."""
    postgres.give_to_server_user(settings, wal_dir, 0o700)
    argv = [str(postgres.pg_binary("pg_waldump")), "--path", str(wal_dir), "--rmgr", "Transaction", segments[0], segments[-1]]
    with tempfile.TemporaryFile() as errors:
        last, returncode, stopped = _run(settings, argv, errors, time_limit)
        errors.seek(0, os.SEEK_END)
        errors.seek(max(0, errors.tell() - 800))
        said = errors.read()
    if stopped:
        raise SnapshotError(f"pg_waldump did not finish reading the WAL in {wal_dir} within {time_limit:.0f} s", _HINT)
    if returncode != 0 and _END_OF_WAL not in said:
        reason = said.decode(errors="replace").strip() or f"exit status {returncode}"
        raise SnapshotError(f"pg_waldump could not read the WAL in {wal_dir}: {reason}", _HINT)
    return datetime.fromisoformat(last.decode()).replace(tzinfo=UTC) if last else None


def _run(settings: Settings, argv: list[str], errors: IO[bytes], time_limit: float) -> tuple[bytes | None, int, bool]:
    """Run `argv` as the server user: (the last commit time it printed, its exit status, whether
    the time limit stopped it)."""
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
    last = None
    stopped = threading.Event()
    with subprocess.Popen(argv, **as_user(postgres.server_user(settings)), cwd="/", env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=errors) as process:
        stdout = cast(IO[bytes], process.stdout)  # a pipe: stdout=PIPE above

        def stop() -> None:
            stopped.set()
            process.kill()

        timer = threading.Timer(time_limit, stop)
        timer.start()
        try:
            while line := stdout.readline(MAX_LINE):
                match = _COMMIT_TIME.search(line)
                if match:
                    last = match.group(1)
            returncode = process.wait()
        finally:
            timer.cancel()
            process.kill()
    return last, returncode, stopped.is_set()
