"""pg_waldump reads WAL from the shared root folder: it runs as the Postgres server user, is
stopped at its time limit, and a failure is a SnapshotError, never a traceback or a silent None."""

from __future__ import annotations

import os
import pwd
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import make_settings, start_postgres, wait_until
from mfcolab import postgres
from mfcolab.errors import SnapshotError
from mfcolab.replica.waldump import last_transaction_time
from mfcolab.settings import Settings
from mirror_helpers import execute


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, float, float]]:
    """A copy of the WAL segment holding one commit, with the times just before and after it."""
    settings = make_settings(tmp_path_factory.mktemp("waldump"))
    pg = start_postgres(settings)
    try:
        execute(pg.dsn, "CREATE TABLE marks (label TEXT)")
        before = time.time()
        execute(pg.dsn, "INSERT INTO marks VALUES ('one')")
        after = time.time()
        name = str(execute(pg.dsn, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
        copy = tmp_path_factory.mktemp("segment") / name
        shutil.copyfile(settings.pgdata / "pg_wal" / name, copy)
    finally:
        pg.stop(30)
    yield copy, before, after


def _wal_dir(tmp_path: Path) -> Path:
    """A folder like restore's: made by root, for root only."""
    folder = tmp_path / "restore-wal"
    folder.mkdir(mode=0o700)
    return folder


def _waldump_processes(wal_dir: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"pg_waldump") and str(wal_dir).encode() in argv:
            found.append(int(entry))
    return found


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_waldump_reads_the_newest_commit_from_a_root_only_folder(tmp_path: Path, committed: tuple[Path, float, float]) -> None:
    segment, before, after = committed
    settings = make_settings(tmp_path)
    wal_dir = _wal_dir(tmp_path)
    shutil.copyfile(segment, wal_dir / segment.name)
    found = last_transaction_time(settings, wal_dir, [segment.name])
    assert found is not None
    assert datetime.fromtimestamp(before, UTC) <= found <= datetime.fromtimestamp(after, UTC)


def _server_uid(settings: Settings) -> int:
    user = postgres.server_user(settings)
    return os.getuid() if user is None else pwd.getpwnam(user).pw_uid


def test_waldump_runs_as_the_server_user_and_a_failure_is_a_clear_error(tmp_path: Path) -> None:
    """The segment is a FIFO: pg_waldump waits on it, is seen running as the server user, then reads
    a few bytes of garbage and fails; that is a SnapshotError naming the folder and what it said."""
    settings = make_settings(tmp_path)
    wal_dir = _wal_dir(tmp_path)
    name = "000000010000000000000003"
    os.mkfifo(wal_dir / name, 0o644)
    outcome: dict[str, BaseException | object] = {}

    def read() -> None:
        try:
            outcome["value"] = last_transaction_time(settings, wal_dir, [name], time_limit=120)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_until(lambda: _waldump_processes(wal_dir), 60, what="pg_waldump to start")
        [pid] = _waldump_processes(wal_dir)
        assert _uid(pid) == _server_uid(settings) != 0
    finally:
        with open(wal_dir / name, "wb") as fifo:  # lets it go on, whatever the assertion said
            fifo.write(b"not a WAL segment")
        reader.join(60)
    error = outcome.get("error")
    assert isinstance(error, SnapshotError), outcome
    assert f"pg_waldump could not read the WAL in {wal_dir}" in str(error)
    assert "mfcolab restore --list" in error.hint


def test_waldump_is_stopped_at_its_time_limit(tmp_path: Path) -> None:
    """A segment nobody ever writes (a FIFO) would keep pg_waldump waiting forever."""
    settings = make_settings(tmp_path)
    wal_dir = _wal_dir(tmp_path)
    name = "000000010000000000000003"
    os.mkfifo(wal_dir / name, 0o644)
    with pytest.raises(SnapshotError, match="did not finish reading the WAL"):
        last_transaction_time(settings, wal_dir, [name], time_limit=1)
    assert _waldump_processes(wal_dir) == []
