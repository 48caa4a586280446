"""Restores from the root folder into a new local folder, with a real Postgres each side."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from crashtrials.components import ComponentStack, Writer
from mirror_helpers import execute, kill_postgres, links_in, start_archiving_postgres, switch_wal

from helpers import make_settings, wait_until
from mfcolab import snapshots
from mfcolab.errors import ConfigError, StackStateError
from mfcolab.mirror import Mirror
from mfcolab.restore import list_generations, restore, restore_if_needed
from mfcolab.settings import Settings


def _table(dsn: str) -> None:
    execute(dsn, "CREATE TABLE IF NOT EXISTS marks (label TEXT PRIMARY KEY)")


def _mark(dsn: str, label: str) -> None:
    execute(dsn, "INSERT INTO marks VALUES (%s)", (label,))


def _restored_stack(settings: Settings) -> ComponentStack:
    """Start Postgres on whatever the data directory holds now, wait for recovery to end."""
    stack = ComponentStack(settings)
    stack.up()
    return stack


def _labels(dsn: str) -> set[str]:
    return {row[0] for row in execute(dsn, "SELECT label FROM marks")}


def test_restore_if_needed_snapshot_taken_during_writes_gives_a_working_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    mirror = Mirror(settings, pg.dsn)
    writer = Writer(pg.dsn, "WhileSnapshotFlow")
    writer.start()
    wait_until(lambda: len(writer.acks) > 20, 60, what="writes")
    report = mirror.snapshot()
    assert report.generation is not None
    wait_until(lambda: len(writer.acks) > len(writer.acks) // 2 + 50, 60, what="more writes")
    writer.stopping.set()
    writer.join(30)
    switch_wal(settings, pg.dsn)
    mirror.sync_once()
    acked = {a.run_number for a in writer.acks}
    kill_postgres(pg)
    shutil.rmtree(settings.local)

    description = restore_if_needed(settings, progress=lambda line: None)
    assert description is not None and report.generation in description
    stack = _restored_stack(settings)
    try:
        stack.check_database()
        runs = {row[0] for row in execute(stack.dsn, "SELECT run_number FROM runs_v3 WHERE flow_id = 'WhileSnapshotFlow'")}
        assert acked <= runs
        # The restored database takes writes of the same shape (a resumed run would write these).
        follow = Writer(stack.dsn, "WhileSnapshotFlow")
        follow.stopping.set()
        follow.run()
        assert follow.error is None
        assert (settings.pgdata.stat().st_mode & 0o777) == 0o700
    finally:
        stack.stop()
    assert links_in(settings.root) == []


def test_restore_generation_on_purpose_goes_back_in_time(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    _table(pg.dsn)
    mirror = Mirror(settings, pg.dsn)
    _mark(pg.dsn, "before-first")
    first = mirror.snapshot().generation
    _mark(pg.dsn, "in-first")
    switch_wal(settings, pg.dsn)
    mirror.sync_once()
    second = mirror.snapshot().generation
    _mark(pg.dsn, "after-second-base")
    switch_wal(settings, pg.dsn)
    _mark(pg.dsn, "in-second")
    switch_wal(settings, pg.dsn)
    mirror.sync_once()
    pg.stop(20)
    mirror.final_snapshot()
    assert [g.id for g in list_generations(settings)] == [first, second]

    with pytest.raises(ConfigError, match="already holds a database"):
        restore(settings, generation=first, progress=lambda line: None)
    restore(settings, generation=first, progress=lambda line: None, move_aside=True)
    assert any(p.name.startswith("pgdata.before-restore-") for p in settings.local.iterdir())
    stack = _restored_stack(settings)
    try:
        labels = _labels(stack.dsn)
        assert {"before-first", "in-first"} <= labels
        assert "in-second" not in labels
        stack.check_database()
    finally:
        stack.stop()

    restore(settings, progress=lambda line: None, move_aside=True)  # the newest: everything
    stack = _restored_stack(settings)
    try:
        assert {"before-first", "in-first", "after-second-base", "in-second"} <= _labels(stack.dsn)
    finally:
        stack.stop()


def test_restore_refuses_while_the_stack_runs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    try:
        Mirror(settings, pg.dsn).snapshot()
        with pytest.raises(StackStateError):
            restore(settings, progress=lambda line: None, move_aside=True)
    finally:
        pg.stop(20)


def test_final_snapshot_after_clean_stop_loses_nothing(tmp_path: Path) -> None:
    """The last, unfinished WAL segment ships at `down`: every acknowledged write comes back."""
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    _table(pg.dsn)
    mirror = Mirror(settings, pg.dsn)
    mirror.snapshot()
    for n in range(50):
        _mark(pg.dsn, f"row-{n}")
    pg.stop(20)
    report = mirror.final_snapshot()
    assert report.segments >= 1
    shutil.rmtree(settings.local)
    stack = _restored_stack(settings)
    try:
        assert {f"row-{n}" for n in range(50)} <= _labels(stack.dsn)
    finally:
        stack.stop()


def test_restore_if_needed_keeps_a_local_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    Mirror(settings, pg.dsn).snapshot()
    pg.stop(20)
    description = restore_if_needed(settings, progress=lambda line: None)
    assert description is not None and description.startswith("kept the local database")
    assert not snapshots.restore_wal_dir(settings).exists()


def test_restore_if_needed_without_snapshots_returns_none(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert restore_if_needed(settings, progress=lambda line: None) is None
    assert list_generations(settings) == []


def test_restore_if_needed_falls_back_when_the_newest_base_is_damaged(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    _table(pg.dsn)
    mirror = Mirror(settings, pg.dsn)
    older = mirror.snapshot().generation
    _mark(pg.dsn, "kept")
    switch_wal(settings, pg.dsn)
    mirror.sync_once()
    newer = mirror.snapshot().generation
    assert older and newer
    kill_postgres(pg)
    shutil.rmtree(settings.local)
    base = snapshots.base_dir(settings, newer) / "base.tar.gz"
    base.write_bytes(base.read_bytes()[: base.stat().st_size // 2])
    lines: list[str] = []
    description = restore_if_needed(settings, progress=lines.append)
    assert description is not None and older in description
    assert any("cannot be restored" in line for line in lines)
    stack = _restored_stack(settings)
    try:
        assert "kept" in _labels(stack.dsn)
    finally:
        stack.stop()


def test_restore_reads_a_root_folder_whose_manifest_is_lost(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    _table(pg.dsn)
    mirror = Mirror(settings, pg.dsn)
    mirror.snapshot()
    _mark(pg.dsn, "shipped")
    switch_wal(settings, pg.dsn)
    mirror.sync_once()
    kill_postgres(pg)
    shutil.rmtree(settings.local)
    snapshots.manifest_path(settings).write_text("{ truncated")
    assert restore_if_needed(settings, progress=lambda line: None) is not None
    stack = _restored_stack(settings)
    try:
        assert "shipped" in _labels(stack.dsn)
    finally:
        stack.stop()


def test_restore_cleans_up_after_a_failed_unpack(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    generation = Mirror(settings, pg.dsn).snapshot().generation
    assert generation
    kill_postgres(pg)
    shutil.rmtree(settings.local)
    (snapshots.base_dir(settings, generation) / "pg_wal.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(Exception, match="could be restored"):
        restore_if_needed(settings, progress=lambda line: None)
    assert not settings.pgdata.exists()
    assert [p.name for p in settings.local.iterdir() if p.name.startswith(".pgdata")] == []
