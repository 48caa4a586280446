"""The mirror against a real Postgres: shipping, bases, retention, failures, links, crashes."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crashtrials.components import ComponentStack, TrialResult, dump, mirror_logs_dir, run_trial, summary
from helpers import make_settings, wait_until
from mfcolab.errors import SnapshotError
from mfcolab.postgres import Postgres
from mfcolab.replica import basebackup, layout
from mfcolab.replica import mirror as mirror_module
from mfcolab.replica.manifest import load_manifest
from mfcolab.replica.mirror import Mirror
from mfcolab.replica.restore import list_generations, restore_if_needed
from mfcolab.settings import Settings
from mfcolab.supervisor.status_view import render
from mirror_helpers import execute, kill_postgres, killed_rsync_leftover, links_in, start_archiving_postgres, switch_wal, temp_files_in


def test_mirror_crash_torture_every_trial_restores(tmp_path: Path) -> None:
    """SIGKILL Postgres and the mirror process at random instants (half of them the moment a
    temporary file exists in the root folder), wipe the local folder, restore: every trial
    starts, pg_amcheck is clean, and no write inside the shipped WAL is missing."""
    settings = make_settings(tmp_path)
    rng = random.Random(20260101)
    results = [run_trial(settings, trial, rng, mid_ship=trial % 2 == 1) for trial in range(4)]
    _assert_every_trial_restored(results)
    assert links_in(settings.root) == []


def _assert_every_trial_restored(results: list[TrialResult]) -> None:
    print(summary(results))
    print(dump(results))
    for result in results:
        assert result.restored, result.error
        assert result.acked > 0
        assert result.missing_before_shipped_end == 0, result


def test_mirror_crash_torture_with_a_new_base_always_uploading(tmp_path: Path) -> None:
    """The same trials with routine bases uploading beside the cycles all the time, so kills
    land in pg_basebackup, in the base's rsync, and in a cycle naming a base that just arrived."""
    settings = make_settings(tmp_path, snapshot_interval=1.0)
    rng = random.Random(20261123)
    results = [run_trial(settings, trial, rng, mid_ship=trial % 2 == 1, routine_bases=True) for trial in range(4)]
    _assert_every_trial_restored(results)
    logs = [path.read_text() for path in sorted(mirror_logs_dir(settings).iterdir())]
    assert sum(log.count("mirror new base: shipped") for log in logs) >= 1  # routine bases arrived and were named
    assert links_in(settings.root) == []


# --- the mirror's public steps, driven directly (loop off) -------------------------------------

def test_mirror_sync_once_ships_segments_and_an_idle_database_writes_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    try:
        mirror = Mirror(settings, pg.dsn)
        first = mirror.sync_once()
        assert first.generation is not None  # no base yet: the first cycle takes one
        execute(pg.dsn, "CREATE TABLE t (x INT)")
        name = switch_wal(settings, pg.dsn)
        report = mirror.sync_once()
        assert report.segments >= 1
        assert (layout.wal_dir(settings, _system_id(pg.dsn)) / layout.wal_piece(name)).is_file()
        assert not (settings.wal_staging_dir / name).exists()
        before = _tree(settings.root)
        idle = mirror.sync_once()
        assert (idle.files, idle.bytes) == (0, 0)
        assert _tree(settings.root) == before
        info = mirror.info()
        assert info["state"] == "idle" and info["generation"] == first.generation and info["size_bytes"] > 0
    finally:
        pg.stop(20)


def test_mirror_start_loop_ships_without_being_called(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0.2)
    pg = start_archiving_postgres(settings)
    mirror = Mirror(settings, pg.dsn)
    try:
        mirror.start()
        wait_until(lambda: mirror.info().get("generation") is not None, 60, what="the first base")
        execute(pg.dsn, "CREATE TABLE t (x INT)")
        name = switch_wal(settings, pg.dsn)
        piece = layout.wal_dir(settings, _system_id(pg.dsn)) / layout.wal_piece(name)
        wait_until(piece.is_file, 60, what="the loop to ship the segment")
        assert mirror.healthy()
    finally:
        mirror.stop()
        pg.stop(20)


def test_mirror_retention_keeps_the_newest_generations(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0, keep_generations=2)
    pg = start_archiving_postgres(settings)
    try:
        mirror = Mirror(settings, pg.dsn)
        execute(pg.dsn, "CREATE TABLE t (x INT)")
        made = []
        for n in range(4):
            made.append(mirror.snapshot().generation)
            execute(pg.dsn, "INSERT INTO t VALUES (%s)", (n,))
            switch_wal(settings, pg.dsn)
            mirror.sync_once()
        kept = [g.id for g in list_generations(settings)]
        assert kept == made[-2:]
        assert sorted(p.name for p in (settings.snapshots_dir / "base").iterdir()) == kept
        manifest = load_manifest(settings)
        assert manifest is not None
        oldest = manifest.generations[0]
        for piece in layout.wal_dir(settings, oldest.system_identifier).iterdir():
            if layout.is_segment(piece.name.split(".")[0]):
                assert layout.parse_segment(piece.name.split(".")[0], oldest.segment_size)[1] >= oldest.start_segment
    finally:
        pg.stop(20)


def test_mirror_killed_rsync_leftovers_are_ignored_by_restore_and_removed_at_mirror_start(tmp_path: Path) -> None:
    """A runtime that died during a cycle leaves rsync's temporary files beside the pieces: the
    next restore (with or without a readable manifest) ignores them, the next mirror removes them."""
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    try:
        execute(pg.dsn, "CREATE TABLE marks (label TEXT)")
        mirror = Mirror(settings, pg.dsn)
        generation = mirror.snapshot().generation
        assert generation is not None
        execute(pg.dsn, "INSERT INTO marks VALUES ('shipped')")
        name = switch_wal(settings, pg.dsn)
        mirror.sync_once()
    finally:
        kill_postgres(pg)
    manifest = load_manifest(settings)
    assert manifest is not None
    shipped = manifest.generations[-1]
    wal = layout.wal_dir(settings, shipped.system_identifier)
    # the segment after the last shipped one, and a piece of a base: both cut off mid-file
    timeline, segno = layout.parse_segment(name, shipped.segment_size)
    next_piece = layout.wal_piece(layout.format_segment(timeline, segno + 1, shipped.segment_size))
    leftovers = [killed_rsync_leftover(tmp_path, wal, next_piece),
                 killed_rsync_leftover(tmp_path, layout.base_dir(settings, generation), "base.tar.gz")]
    assert all(layout.is_temp(path.name) for path in leftovers)
    shutil.rmtree(settings.local)
    layout.manifest_path(settings).write_text("{ truncated")  # and the manifest lost, too
    assert restore_if_needed(settings, progress=lambda line: None) is not None
    stack = ComponentStack(settings)
    stack.up()
    try:
        assert execute(stack.dsn, "SELECT label FROM marks") == [("shipped",)]
        assert sorted(temp_files_in(settings.root)) == sorted(path.name for path in leftovers)
        Mirror(settings, stack.dsn).sync_once()
        assert temp_files_in(settings.root) == []
    finally:
        stack.stop()


# --- a root folder like Drive: no links, failing writes --------------------------------------------

NO_LINKS_SHIM = Path(__file__).resolve().parent / "shims" / "nolinks.c"  # LD_PRELOAD: link(), symlink(), ... refused

SHIM_CHILD = """
import os, sys, time, errno
from mfcolab.settings import Settings
from mfcolab.replica import mirror as mirror_module
from mfcolab.replica.mirror import Mirror
import psycopg2
settings = Settings.resolve()
try:
    os.link(__file__ if '__file__' in dir() else sys.executable, str(settings.root / 'probe'))
    raise SystemExit('the shim did not refuse a link')
except OSError as exc:
    assert exc.errno == errno.EOPNOTSUPP, exc
mirror = Mirror(settings, sys.argv[1])
print(mirror.snapshot())
conn = psycopg2.connect(sys.argv[1]); conn.autocommit = True
cur = conn.cursor()
cur.execute("CREATE TABLE shim (x INT)"); cur.execute("INSERT INTO shim VALUES (42)")
cur.execute("SELECT pg_walfile_name(pg_switch_wal())"); name = cur.fetchone()[0]
while not (settings.wal_staging_dir / name).exists():
    time.sleep(0.05)
print(mirror.sync_once())
print(mirror.snapshot())
"""


def test_mirror_works_on_a_root_folder_that_refuses_links(tmp_path: Path) -> None:
    """Mirror (and its rsync) and restore run with link(), symlink(), chmod() and directory
    renames refused in the root folder (an LD_PRELOAD shim, the way Drive's FUSE mount refuses
    them)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the no-links shim")
    shim = tmp_path / "nolinks.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(shim), str(NO_LINKS_SHIM), "-ldl"], check=True)
    settings = make_settings(tmp_path, snapshot_interval=0)
    settings.root.mkdir(parents=True)
    refused = tmp_path / "refused.log"
    env = {**os.environ, **settings.to_env(), "LD_PRELOAD": str(shim), "NO_LINKS_ROOT": str(settings.root), "NO_LINKS_LOG": str(refused)}
    pg = start_archiving_postgres(settings)
    try:
        result = subprocess.run([sys.executable, "-c", SHIM_CHILD, pg.dsn], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        kill_postgres(pg)
    lines = [line.split(" ", 2) for line in refused.read_text().splitlines()]
    refusals = [(what, who) for what, who, _path in lines if what != "renamed-file"]
    assert refusals[0][0] == "link"  # the probe
    # Nothing else was refused but the mode rsync tries to give the temporary files it creates
    # (it goes on without it: modes are not kept): no link, no symlink, no directory rename.
    assert {what for what, _who in refusals[1:]} <= {"fchmod"}
    assert {who for _what, who in refusals[1:]} <= {"rsync"}
    # rsync ran under the shim and put the pieces in place by renaming each finished file;
    # the manifest and the writer's claim are the files the mirror renames itself.
    placed = {(who, Path(path).name.endswith(".gz")) for what, who, path in lines if what == "renamed-file"}
    assert ("rsync", True) in placed
    mirror_renamed = {Path(path).name for what, who, path in lines if what == "renamed-file" and who != "rsync"}
    assert mirror_renamed == {layout.MANIFEST, layout.WRITER_CLAIM}
    assert links_in(settings.root) == []
    shutil.rmtree(settings.local)
    restore_child = "from mfcolab.settings import Settings\nfrom mfcolab.replica.restore import restore_if_needed\nprint(restore_if_needed(Settings.resolve()))"
    result = subprocess.run([sys.executable, "-c", restore_child], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stack = ComponentStack(settings)
    stack.up()
    try:
        assert execute(stack.dsn, "SELECT x FROM shim") == [(42,)]
    finally:
        stack.stop()


@pytest.fixture
def tmpfs_root(tmp_path: Path) -> Iterator[Path]:
    """A root folder on its own tmpfs, so it can be made read-only under a running mirror."""
    root = tmp_path / "root"
    root.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(root)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    yield root
    subprocess.run(["umount", "-l", str(root)], capture_output=True)


def _remount(root: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(root)], check=True)


def test_mirror_failing_writes_keep_the_last_good_state_and_recover(tmp_path: Path, tmpfs_root: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    try:
        execute(pg.dsn, "CREATE TABLE marks (label TEXT)")
        mirror = Mirror(settings, pg.dsn)
        good = mirror.snapshot().generation
        manifest_before = layout.manifest_path(settings).read_bytes()
        execute(pg.dsn, "INSERT INTO marks VALUES ('while-failing')")
        name = switch_wal(settings, pg.dsn)
        _remount(tmpfs_root, "ro")
        caplog.set_level(logging.WARNING, logger="mfcolab.replica.mirror")
        for _attempt in range(3):
            with pytest.raises(SnapshotError):
                mirror.sync_once()
        assert mirror.info()["state"] == "failing" and "Read-only" in mirror.info()["reason"]
        assert not mirror.healthy()
        assert layout.manifest_path(settings).read_bytes() == manifest_before
        assert [g.id for g in list_generations(settings)] == [good]
        assert (settings.wal_staging_dir / name).exists()  # kept until it ships
        _remount(tmpfs_root, "rw")
        report = mirror.sync_once()
        assert report.segments >= 1 and mirror.info()["state"] == "idle"
        failures = [r for r in caplog.records if "shipping to" in r.getMessage()]
        recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
        assert len(failures) == 1 and len(recovered) == 1
    finally:
        kill_postgres(pg)
    shutil.rmtree(settings.local)
    stack = ComponentStack(settings)
    stack.up()
    try:
        assert execute(stack.dsn, "SELECT label FROM marks") == [("while-failing",)]
    finally:
        stack.stop()


GATED_RSYNC = """#!{python}
# rsync, except that a copy carrying a base backup waits while HOLD exists (a slow root folder)
# and fails while FAIL exists (a root folder that refuses it). Every other copy goes straight through.
import os, sys, time
source = sys.argv[-2]
if os.path.isdir(os.path.join(source, "base")):
    if os.path.exists({fail!r}):
        sys.stderr.write("rsync: write failed: No space left on device (28)\\n")
        sys.exit(11)
    open({waiting!r}, "w").close()
    while os.path.exists({hold!r}):
        time.sleep(0.05)
os.execv({rsync!r}, [{rsync!r}, *sys.argv[1:]])
"""


@dataclasses.dataclass
class BaseGate:
    hold: Path
    fail: Path
    waiting: Path


@pytest.fixture
def base_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BaseGate:
    """rsync on PATH replaced by GATED_RSYNC, for mirrors made after this fixture."""
    real = shutil.which("rsync")
    assert real is not None
    gate = BaseGate(tmp_path / "gate-hold", tmp_path / "gate-fail", tmp_path / "gate-waiting")
    folder = tmp_path / "gated-bin"
    folder.mkdir()
    script = folder / "rsync"
    script.write_text(GATED_RSYNC.format(python=sys.executable, rsync=real, hold=str(gate.hold),
                                         fail=str(gate.fail), waiting=str(gate.waiting)))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return gate


def _routine_base_due(monkeypatch: pytest.MonkeyPatch, due: bool) -> None:
    """Make the WAL since the newest base outweigh it (or never)."""
    monkeypatch.setattr(mirror_module, "BASE_MIN_WAL_BYTES", 0 if due else 1 << 60)
    monkeypatch.setattr(mirror_module, "BASE_WAL_RATIO", 0.0)


@dataclasses.dataclass
class Archiving:
    settings: Settings
    pg: Postgres
    mirror: Mirror
    first: str  # the first base, shipped inside a cycle

    def stop(self) -> None:
        self.mirror.stop()
        if self.pg.healthy():
            kill_postgres(self.pg)


@pytest.fixture
def archiving(tmp_path: Path, base_gate: BaseGate) -> Iterator[Archiving]:
    """Postgres archiving and a mirror (loop off, rsync gated) that has shipped its first base."""
    settings = make_settings(tmp_path, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    mirror = Mirror(settings, pg.dsn)
    first = mirror.sync_once().generation
    assert first is not None
    running = Archiving(settings, pg, mirror, first)
    yield running
    running.stop()


def test_mirror_ships_wal_while_a_routine_base_uploads(archiving: Archiving, base_gate: BaseGate,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings, pg, mirror, first = archiving.settings, archiving.pg, archiving.mirror, archiving.first
    execute(pg.dsn, "CREATE TABLE marks (label TEXT)")
    base_gate.hold.touch()
    _routine_base_due(monkeypatch, True)
    report = mirror.sync_once()
    assert report.generation is None  # the routine base went to its own thread ...
    uploading = mirror.info()["new_base"]
    wait_until(base_gate.waiting.exists, 120, what="the base's rsync to start")  # ... and its copy is held
    _routine_base_due(monkeypatch, False)

    execute(pg.dsn, "INSERT INTO marks VALUES ('during the upload')")
    name = switch_wal(settings, pg.dsn)
    during = mirror.sync_once()
    assert during.segments >= 1 and during.generation is None
    piece = layout.wal_dir(settings, _system_id(pg.dsn)) / layout.wal_piece(name)
    assert piece.is_file()
    manifest = load_manifest(settings)
    assert manifest is not None and [g.id for g in manifest.generations] == [first]
    segno = layout.parse_segment(name, manifest.generations[0].segment_size)[1]
    assert manifest.end_segment(manifest.generations[0]) >= segno  # the shipped WAL is named
    assert render_mirror(mirror)[1] == f"mirror: new base {uploading} uploading (WAL keeps shipping meanwhile)"

    wait_until(lambda: not mirror.sync_once().segments and not _staged_segments(settings), 60,
             what="staging to be empty")  # so the cycle that names the base has nothing else to ship
    base_gate.hold.unlink()
    wait_until(lambda: mirror.info().get("generation") == uploading, 120, what="the new base to be named")
    assert [g.id for g in list_generations(settings)] == [first, uploading]
    assert "new_base" not in mirror.info()
    execute(pg.dsn, "INSERT INTO marks VALUES ('after the upload')")
    switch_wal(settings, pg.dsn)
    assert mirror.sync_once().segments >= 1

    archiving.stop()
    shutil.rmtree(settings.local)
    stack = ComponentStack(settings)
    stack.up()
    try:
        assert execute(stack.dsn, "SELECT label FROM marks") == [("during the upload",), ("after the upload",)]
    finally:
        stack.stop()


def test_mirror_failing_routine_base_is_retried_and_wal_keeps_shipping(archiving: Archiving, base_gate: BaseGate,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings, pg, mirror = archiving.settings, archiving.pg, archiving.mirror
    base_gate.fail.touch()
    _routine_base_due(monkeypatch, True)
    monkeypatch.setattr(basebackup, "RETRY_FIRST_SECONDS", 3600.0)
    mirror.sync_once()
    wait_until(lambda: "base_error" in mirror.info(), 120, what="the new base to fail")
    info = mirror.info()
    assert "No space left on device" in info["base_error"] and "new_base" not in info
    assert info["state"] == "idle" and mirror.healthy()  # WAL shipping is not what failed
    assert render_mirror(mirror)[1].startswith("mirror: the last new base failed, retrying (rsync into the root folder failed")

    execute(pg.dsn, "CREATE TABLE marks (label TEXT)")
    switch_wal(settings, pg.dsn)
    report = mirror.sync_once()
    assert report.segments >= 1 and "new_base" not in mirror.info()  # no new attempt before the backoff ends
    assert [g.id for g in list_generations(settings)] == [archiving.first]
    assert not layout.outbox_dir(settings).joinpath("base").exists()
    assert not layout.base_outbox_dir(settings).joinpath("base").exists()


def _staged_segments(settings: Settings) -> list[str]:
    return [name for name in os.listdir(settings.wal_staging_dir) if layout.is_segment(name)]


def render_mirror(mirror: Mirror) -> list[str]:
    """The mirror's lines of `mfcolab status`."""
    return [line for line in render({"running": True, "root": "/r", "mirror": mirror.info()}).splitlines() if line.startswith("mirror:")]


def _system_id(dsn: str) -> str:
    return str(execute(dsn, "SELECT system_identifier::text FROM pg_control_system()")[0][0])


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
