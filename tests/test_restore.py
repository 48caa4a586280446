"""Restores from the root folder into a new local folder, with a real Postgres each side."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crashtrials.components import ComponentStack, Writer
from helpers import make_settings, wait_until
from mfcolab.errors import ConfigError, SnapshotError, StackStateError
from mfcolab.replica import layout
from mfcolab.replica.mirror import Mirror
from mfcolab.replica.restore import list_generations, parse_until, restore, restore_if_needed
from mfcolab.settings import Settings
from mirror_helpers import execute, kill_postgres, links_in, start_archiving_postgres, switch_wal
from stack_helpers import mfcolab


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
    assert not layout.restore_wal_dir(settings).exists()


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
    base = layout.base_dir(settings, newer) / "base.tar.gz"
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
    layout.manifest_path(settings).write_text("{ truncated")
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
    (layout.base_dir(settings, generation) / "pg_wal.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(Exception, match="could be restored"):
        restore_if_needed(settings, progress=lambda line: None)
    assert not settings.pgdata.exists()
    assert [p.name for p in settings.local.iterdir() if p.name.startswith(".pgdata")] == []


def test_parse_until_reads_an_aware_a_naive_local_and_a_relative_time() -> None:
    aware = parse_until("2026-11-29T19:54:07.250+02:00")
    assert aware == datetime(2026, 11, 29, 17, 54, 7, 250000, tzinfo=UTC)
    assert parse_until("2026-11-29T19:54:07Z") == datetime(2026, 11, 29, 19, 54, 7, tzinfo=UTC)
    assert parse_until("2026-11-29 19:54:07") == datetime(2026, 11, 29, 19, 54, 7).astimezone().astimezone(UTC)
    now = 1_800_000_000.0
    assert parse_until("-10m", now=now).timestamp() == now - 600
    assert parse_until("-1.5h", now=now).timestamp() == now - 5400
    assert parse_until("-90s", now=now).timestamp() == now - 90
    assert parse_until("-2d", now=now).timestamp() == now - 2 * 86400
    for bad in ("yesterday", "-10x", "10m", ""):
        with pytest.raises(ConfigError, match="is not a time"):
            parse_until(bad)


def _restore_and_read(settings: Settings, **how: Any) -> tuple[set[str], list[str]]:
    """`restore(**how)` over whatever is there (moved aside), start it, return its labels and the progress lines."""
    lines: list[str] = []
    restore(settings, progress=lines.append, move_aside=True, **how)
    stack = _restored_stack(settings)
    try:
        return _labels(stack.dsn), lines
    finally:
        stack.stop()


def test_restore_until_stops_at_the_time_in_every_form_and_refuses_a_time_before_every_base(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    before_any_base = time.time()
    pg = start_archiving_postgres(settings)
    _table(pg.dsn)
    mirror = Mirror(settings, pg.dsn)
    generation = mirror.snapshot().generation
    _mark(pg.dsn, "a")
    noted = time.time()
    wait_until(lambda: time.time() > noted + 0.2, 5, what="time to pass the noted time")
    _mark(pg.dsn, "b")
    switch_wal(settings, pg.dsn)
    mirror.sync_once()
    after_the_last_commit = time.time()
    pg.stop(20)
    mirror.final_snapshot()
    [info] = list_generations(settings)
    assert info.id == generation and info.created < noted < info.until

    aware = datetime.fromtimestamp(noted, UTC).isoformat()
    assert _restore_and_read(settings, until=aware)[0] == {"a"}
    naive_local = datetime.fromtimestamp(noted).isoformat(sep=" ")
    assert _restore_and_read(settings, until=naive_local)[0] == {"a"}
    assert _restore_and_read(settings, until=f"-{time.time() - noted:.6f}s")[0] == {"a"}
    assert _restore_and_read(settings, generation=generation, until=aware)[0] == {"a"}

    # past the last commit: everything, said so (Postgres would refuse a target it never reaches)
    labels, lines = _restore_and_read(settings, until=datetime.fromtimestamp(time.time() + 3600, UTC).isoformat())
    assert labels == {"a", "b"}
    assert any("is after the newest shipped WAL" in line and "restoring all of it" in line for line in lines), lines
    assert _restore_and_read(settings, until=datetime.fromtimestamp(after_the_last_commit, UTC).isoformat())[0] == {"a", "b"}

    # before every base: one refusal naming the oldest restorable time, nothing moved
    aside_before = sorted(p.name for p in settings.local.iterdir() if p.name.startswith("pgdata.before-restore-"))
    control_before = (settings.pgdata / "global" / "pg_control").read_bytes()
    with pytest.raises(ConfigError) as refused:
        restore(settings, until=datetime.fromtimestamp(before_any_base, UTC).isoformat(), progress=lambda line: None,
                move_aside=True)
    assert "before the oldest restorable time" in refused.value.message and generation in refused.value.message
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in settings.local.iterdir() if p.name.startswith("pgdata.before-restore-")) == aside_before
    assert (settings.pgdata / "global" / "pg_control").read_bytes() == control_before


def test_restore_until_chooses_the_newest_base_older_than_the_time(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    _table(pg.dsn)
    mirror = Mirror(settings, pg.dsn)
    first = mirror.snapshot().generation
    _mark(pg.dsn, "in-first")
    switch_wal(settings, pg.dsn)
    mirror.sync_once()
    second = mirror.snapshot().generation
    _mark(pg.dsn, "in-second")
    noted = time.time()
    wait_until(lambda: time.time() > noted + 0.2, 5, what="time to pass the noted time")
    _mark(pg.dsn, "later")
    switch_wal(settings, pg.dsn)
    mirror.sync_once()
    pg.stop(20)
    mirror.final_snapshot()
    windows = {g.id: (g.created, g.until) for g in list_generations(settings)}
    assert windows[first][1] <= windows[second][0] < noted < windows[second][1]

    lines: list[str] = []
    restore(settings, until=datetime.fromtimestamp(noted, UTC).isoformat(), progress=lines.append, move_aside=True)
    assert any(f"restoring generation {second}" in line for line in lines), lines
    stack = _restored_stack(settings)
    try:
        assert _labels(stack.dsn) == {"in-first", "in-second"}
    finally:
        stack.stop()
    # an older generation with a time past where the next base began still replays up to the time
    assert _restore_and_read(settings, generation=first, until=datetime.fromtimestamp(noted, UTC).isoformat())[0] == {
        "in-first", "in-second"}
    with pytest.raises(ConfigError, match=f"before generation {second} was complete"):
        restore(settings, generation=second, until=datetime.fromtimestamp(windows[first][0] + 0.001, UTC).isoformat(),
                progress=lambda line: None, move_aside=True)


def test_restore_puts_the_database_back_when_it_fails_after_moving_it_aside(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    _table(pg.dsn)
    mirror = Mirror(settings, pg.dsn)
    generation = mirror.snapshot().generation
    assert generation
    _mark(pg.dsn, "live")
    pg.stop(20)
    mirror.final_snapshot()
    # damage the start of the compressed stream, keeping the size: only unpacking it finds out
    base = layout.base_dir(settings, generation) / "base.tar.gz"
    data = bytearray(base.read_bytes())
    data[20:84] = bytes(b ^ 0xFF for b in data[20:84])
    base.write_bytes(bytes(data))

    with pytest.raises(SnapshotError) as failed:
        restore(settings, progress=lambda line: None, move_aside=True)
    assert f"back in {settings.pgdata}" in failed.value.message and "\n" not in failed.value.message
    assert (settings.pgdata / "PG_VERSION").exists()
    assert [p.name for p in settings.local.iterdir() if "before-restore" in p.name or "restoring" in p.name] == []
    stack = _restored_stack(settings)
    try:
        assert _labels(stack.dsn) == {"live"}
    finally:
        stack.stop()


def test_restore_list_shows_each_generations_window(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    mirror = Mirror(settings, pg.dsn)
    first, second = mirror.snapshot().generation, mirror.snapshot().generation
    pg.stop(20)
    mirror.final_snapshot()
    result = mfcolab("restore", "--root", str(settings.root), "--local", str(settings.local), "--list")
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {first, second}
    for info in list_generations(settings):
        start, end = (datetime.fromisoformat(value).timestamp() for value in rows[info.id][2:4])
        assert info.created <= start <= info.created + 1 and info.until - 1 <= end <= info.until
        assert parse_until(rows[info.id][2]).timestamp() == start  # what --until reads back
    assert rows[second][-1] == "(newest)" and rows[first][-1] == "MB"
    assert (settings.pgdata / "PG_VERSION").exists() and not layout.restore_wal_dir(settings).exists()
