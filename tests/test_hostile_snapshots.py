"""A writer of the shared root folder is hostile: restore takes nothing from a snapshot but a
database (no links, devices, paths outside PGDATA, commands, access rules, short or foreign WAL),
and the mirror ships nothing from the staging folder but whole WAL segments of this database."""

from __future__ import annotations

import gzip
import io
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

from crashtrials.components import ComponentStack
from helpers import make_settings, returned_or_raised, wait_until
from mfcolab.errors import SnapshotError
from mfcolab.replica import layout, walfile
from mfcolab.replica.manifest import Manifest, load_manifest, save_manifest
from mfcolab.replica.mirror import Mirror
from mfcolab.replica.restore import restore_if_needed
from mfcolab.settings import Settings
from mirror_helpers import execute, kill_postgres, start_archiving_postgres, switch_wal


@pytest.fixture(scope="module")
def shipped_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A root folder holding one generation and three WAL segments after it."""
    settings = make_settings(tmp_path_factory.mktemp("shipped"), snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    mirror = Mirror(settings, pg.dsn)
    try:
        execute(pg.dsn, "CREATE TABLE marks (label TEXT PRIMARY KEY)")
        assert mirror.snapshot().generation
        for label in ("one", "two", "three"):
            execute(pg.dsn, "INSERT INTO marks VALUES (%s)", (label,))
            switch_wal(settings, pg.dsn)
        mirror.sync_once()
    finally:
        kill_postgres(pg)
    yield settings.root


def _copy(shipped_root: Path, tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path, snapshot_interval=0)
    shutil.copytree(shipped_root, settings.root)
    return settings


def _rewrite_base(settings: Settings, change: Callable[[tarfile.TarFile], None], drop: tuple[str, ...] = ()) -> None:
    """Rebuild the generation's base.tar.gz: its members (less those named in `drop`), then what `change` adds;
    the manifest is updated to the new size, as a writer of the root folder would."""
    manifest = load_manifest(settings)
    assert manifest is not None
    generation = manifest.generations[-1]
    path = layout.base_dir(settings, generation.id) / "base.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(path, "r:gz") as old, tarfile.open(fileobj=buffer, mode="w:gz") as new:
        for member in old.getmembers():
            if member.name not in drop:
                new.addfile(member, old.extractfile(member) if member.isreg() else None)
        change(new)
    path.write_bytes(buffer.getvalue())
    generation.files["base.tar.gz"] = len(buffer.getvalue())
    save_manifest(settings, manifest)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_special(tar: tarfile.TarFile, name: str, kind: bytes, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


def _refused(settings: Settings) -> None:
    with pytest.raises(SnapshotError, match="could be restored"):
        restore_if_needed(settings, progress=lambda line: None)
    assert not settings.pgdata.exists()


def test_restore_refuses_a_hard_link_to_a_file_outside_pgdata(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    victim = tmp_path / "root-only"
    victim.write_text("secret")
    victim.chmod(0o600)
    before = victim.stat()
    _rewrite_base(settings, lambda tar: _add_special(tar, "global/victim", tarfile.LNKTYPE, str(victim)))
    _refused(settings)
    after = victim.stat()
    assert (after.st_uid, after.st_gid, after.st_mode, after.st_nlink) == (before.st_uid, before.st_gid, before.st_mode, 1)


def test_restore_refuses_a_symlink_even_one_inside_pgdata(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    _rewrite_base(settings, lambda tar: _add_special(tar, "pg_tblspc/16400", tarfile.SYMTYPE, "../global"))
    _refused(settings)


def test_restore_refuses_a_path_out_of_pgdata(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    _rewrite_base(settings, lambda tar: _add_file(tar, "../escaped", b"x"))
    _refused(settings)
    assert not (settings.local / "escaped").exists()


def test_restore_refuses_a_device_file(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    _rewrite_base(settings, lambda tar: _add_special(tar, "base/null", tarfile.CHRTYPE))
    _refused(settings)


def test_restore_writes_its_own_configuration_over_the_archives(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    auto = b"recovery_end_command = 'id > /tmp/owned'\narchive_cleanup_command = 'id'\nshared_preload_libraries = '/tmp/x.so'\n"
    conf = b"include '/etc/evil.conf'\nport = 1\ntimezone = 'Etc/UTC'\n"
    hba = b"host all all 127.0.0.1/32 trust\n"

    def hostile(tar: tarfile.TarFile) -> None:
        _add_file(tar, "postgresql.auto.conf", auto)
        _add_file(tar, "postgresql.conf", conf)
        _add_file(tar, "pg_hba.conf", hba)

    _rewrite_base(settings, hostile, drop=("postgresql.auto.conf", "postgresql.conf", "pg_hba.conf"))
    assert restore_if_needed(settings, progress=lambda line: None)
    stack = ComponentStack(settings)
    try:
        stack.up()
        settings_now = dict(execute(stack.dsn, "SELECT lower(name), setting FROM pg_settings WHERE lower(name) IN"
                                    " ('recovery_end_command', 'archive_cleanup_command', 'shared_preload_libraries', 'timezone')"))
        assert settings_now == {"recovery_end_command": "", "archive_cleanup_command": "", "shared_preload_libraries": "",
                                "timezone": "Etc/UTC"}
        assert {row[0] for row in execute(stack.dsn, "SELECT label FROM marks")} == {"one", "two", "three"}
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host="127.0.0.1", port=settings.pg_port, user="postgres", dbname="postgres", connect_timeout=5)
    finally:
        stack.stop()


def _segments(settings: Settings) -> list[Path]:
    return sorted(path for path in layout.wal_dir(settings, _system(settings)).iterdir() if layout.is_segment(path.name[:-3]))


def _system(settings: Settings) -> str:
    manifest = load_manifest(settings)
    assert manifest is not None
    return manifest.generations[-1].system_identifier


@pytest.mark.parametrize("damage", ["short", "another segment"])
def test_restore_stops_the_wal_at_a_short_or_foreign_segment(shipped_root: Path, tmp_path: Path, damage: str) -> None:
    settings = _copy(shipped_root, tmp_path)
    pieces = _segments(settings)
    assert len(pieces) >= 3
    kept, bad = pieces[-3], pieces[-2]
    content = gzip.decompress(bad.read_bytes())
    replacement = content[: len(content) // 2] if damage == "short" else gzip.decompress(kept.read_bytes())
    bad.write_bytes(gzip.compress(replacement))
    lines: list[str] = []
    description = restore_if_needed(settings, progress=lines.append)
    assert description is not None and f"WAL through {kept.name[:-3]}" in description
    assert any(f"WAL ends early at {bad.name[:-3]}" in line for line in lines)
    assert not (layout.restore_wal_dir(settings) / bad.name[:-3]).exists()


def test_restore_refuses_a_short_segment_in_the_base_backups_own_wal(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    manifest = load_manifest(settings)
    assert manifest is not None
    generation = manifest.generations[-1]
    path = layout.base_dir(settings, generation.id) / "pg_wal.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(path, "r:gz") as old, tarfile.open(fileobj=buffer, mode="w:gz") as new:
        segments = [member for member in old.getmembers() if layout.is_segment(member.name)]
        assert segments
        for member in old.getmembers():
            content = old.extractfile(member) if member.isreg() else None
            if member is segments[0] and content is not None:
                data = content.read()[:1000]
                member.size, content = len(data), io.BytesIO(data)
            new.addfile(member, content)
    path.write_bytes(buffer.getvalue())
    generation.files["pg_wal.tar.gz"] = len(buffer.getvalue())
    save_manifest(settings, manifest)
    with pytest.raises(SnapshotError, match="a segment has"):
        restore_if_needed(settings, progress=lambda line: None)


def test_restore_stops_the_wal_at_a_fifo_in_place_of_a_segment(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    pieces = _segments(settings)
    kept, bad = pieces[-3], pieces[-2]
    bad.unlink()
    os.mkfifo(bad)
    lines: list[str] = []
    description = returned_or_raised(lambda: restore_if_needed(settings, progress=lines.append), bad)
    assert isinstance(description, str) and f"WAL through {kept.name[:-3]}" in description
    assert any(f"WAL ends early at {bad.name[:-3]}" in line and "not a regular file" in line for line in lines)


def test_restore_refuses_a_base_archive_that_is_a_fifo(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    manifest = load_manifest(settings)
    assert manifest is not None
    generation = manifest.generations[-1]
    archive = layout.base_dir(settings, generation.id) / "base.tar.gz"
    archive.unlink()
    os.mkfifo(archive)
    generation.files["base.tar.gz"] = 0  # what a FIFO's size reads as
    save_manifest(settings, manifest)
    lines: list[str] = []
    refused = returned_or_raised(lambda: restore_if_needed(settings, progress=lines.append), archive)
    assert isinstance(refused, SnapshotError) and "could be restored" in refused.message
    assert any("base.tar.gz is damaged or unreadable: it is not a regular file" in line for line in lines)
    assert not settings.pgdata.exists()


def test_a_fifo_or_a_link_in_place_of_the_manifest_is_rebuilt_from_the_generation_records(
        shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    manifest = layout.manifest_path(settings)
    expected = load_manifest(settings)
    assert expected is not None
    manifest.unlink()
    os.mkfifo(manifest)
    rebuilt = returned_or_raised(lambda: load_manifest(settings), manifest)
    assert isinstance(rebuilt, Manifest) and [g.id for g in rebuilt.generations] == [g.id for g in expected.generations]
    manifest.unlink()
    manifest.symlink_to("/dev/zero")  # read whole, it never ends
    rebuilt = returned_or_raised(lambda: load_manifest(settings), manifest)
    assert isinstance(rebuilt, Manifest) and [g.id for g in rebuilt.generations] == [g.id for g in expected.generations]


def _add_history(settings: Settings, name: str, content: bytes) -> Path:
    """A timeline history entry in the manifest and its piece, as a writer of the root folder would add them."""
    manifest = load_manifest(settings)
    assert manifest is not None
    system = manifest.generations[-1].system_identifier
    piece = layout.wal_dir(settings, system) / layout.wal_piece(name)
    piece.write_bytes(gzip.compress(content))
    manifest.history.append(f"{system}/{name}")
    save_manifest(settings, manifest)
    return piece


def test_restore_decompresses_no_more_of_a_history_file_than_one_can_hold(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    _add_history(settings, "00000002.history", b"1\t0/3000000\tno recovery target specified\n" * (1 << 20))  # 42 MiB
    with pytest.raises(SnapshotError, match="00000002.history"):
        restore_if_needed(settings, progress=lambda line: None)
    assert not (layout.restore_wal_dir(settings) / "00000002.history").exists()


def test_restore_writes_no_history_file_named_outside_its_folder(shipped_root: Path, tmp_path: Path) -> None:
    settings = _copy(shipped_root, tmp_path)
    name = "../../escaped.history"
    piece = _add_history(settings, name, b"1\t0/3000000\tno recovery target specified\n")
    assert piece.exists()
    assert restore_if_needed(settings, progress=lambda line: None) is not None
    assert not (layout.restore_wal_dir(settings) / name).exists()


# --- the mirror and the staging folder (writable by the server user) ---------------------------

def test_mirror_refuses_a_staged_symlink_and_ships_the_real_segment_after_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, snapshot_interval=0)
    secret = settings.root / "access_key"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"the key\n" * (1 << 17))  # exactly one segment long
    pg = start_archiving_postgres(settings)
    mirror = Mirror(settings, pg.dsn)
    try:
        assert mirror.snapshot().generation
        name = str(execute(pg.dsn, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
        planted = settings.wal_staging_dir / name
        planted.symlink_to(secret)
        with caplog.at_level(logging.WARNING):
            mirror.sync_once()
        assert any(name in record.getMessage() and "symbolic link" in record.getMessage() for record in caplog.records)
        # The refused name is a gap, so that cycle took a new base, whose WAL switch may already
        # have put the real segment in place of the link (Postgres' archive_command renames over it).
        if planted.is_symlink():
            execute(pg.dsn, "CREATE TABLE written_after (id int)")
            execute(pg.dsn, "SELECT pg_switch_wal()")
        wait_until(lambda: not planted.is_symlink(), timeout=60, what="the real segment to replace the link")
        mirror.sync_once()
        piece = layout.wal_dir(settings, _system(settings)) / layout.wal_piece(name)
        shipped = gzip.decompress(piece.read_bytes())
        assert b"the key" not in shipped
        _timeline, segno = layout.parse_segment(name, len(shipped))
        walfile.check_segment(piece, shipped, len(shipped), segno, _system(settings))
    finally:
        kill_postgres(pg)


def test_read_staged_refuses_links_special_files_and_wrong_sizes(tmp_path: Path) -> None:
    regular = tmp_path / "regular"
    regular.write_bytes(b"x" * 100)
    (tmp_path / "symlink").symlink_to(regular)
    os.link(regular, tmp_path / "second-name")
    os.mkfifo(tmp_path / "fifo")
    cases = {"symlink": "symbolic link", "second-name": "hard link", "fifo": "not a regular file"}
    for name, reason in cases.items():
        with pytest.raises(walfile.RefusedWal, match=reason):
            walfile.read_staged(tmp_path / name, 1000)
        assert os.path.lexists(tmp_path / name)  # left in place
    os.unlink(tmp_path / "second-name")
    with pytest.raises(walfile.RefusedWal, match="more than 10"):
        walfile.read_staged(regular, 10)
    assert walfile.read_staged(regular, 100) == b"x" * 100
    with pytest.raises(walfile.RefusedWal, match="a segment has 1048576"):
        walfile.check_segment(regular, regular.read_bytes(), 1 << 20, 1, "1")
    assert stat.S_ISREG(regular.lstat().st_mode)
