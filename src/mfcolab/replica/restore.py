"""Restore a database from <root>/snapshots/ before Postgres starts.

A restore unpacks a generation's base backup into a fresh folder beside the data directory,
puts the generation's WAL (decompressed) in a local folder, writes recovery.signal and a
restore_command, and only then moves the folder into place. Postgres replays the WAL and
promotes itself when it starts. Nothing existing is overwritten: a non-empty data directory is
kept, or moved aside when asked.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import math
import os
import re
import shutil
import tarfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from .. import postgres
from ..errors import ConfigError, MfcolabError, SnapshotError, StackStateError
from ..settings import Settings
from ..sharedfile import RefusedFile, open_regular
from ..supervisor.process import pid_alive
from ..types import Progress
from . import layout, waldump, walfile
from .manifest import Generation, Manifest, load_manifest

log = logging.getLogger(__name__)

CONF_BEGIN = "# mfcolab restore: begin"
CONF_END = "# mfcolab restore: end"


@dataclasses.dataclass(frozen=True)
class GenerationInfo:
    id: str
    created: float  # its base was complete: the earliest time `--until` can reach through it
    until: float  # the latest time `--until` chooses it for (for the newest: when its newest WAL was shipped)
    timeline: int
    size_bytes: int
    newest: bool


def list_generations(settings: Settings) -> list[GenerationInfo]:
    """Complete generations in the root folder, oldest first, each with its restorable window."""
    manifest = load_manifest(settings)
    if manifest is None:
        return []
    newest = manifest.newest()
    return [
        GenerationInfo(g.id, g.created, _window_end(manifest, g), g.timeline, g.base_bytes + g.wal_bytes, g is newest)
        for g in manifest.generations
    ]


def window_lines(generations: list[GenerationInfo]) -> list[str]:
    """`mfcolab restore --list`: one line per generation, its window in local time (what --until takes)."""
    if not generations:
        return ["no snapshot in the root folder"]
    lines = [f"{'generation':<27} {'timeline':>8}  {'restorable from':<25}  {'to':<25}  size"]
    for g in generations:
        newest = "  (newest)" if g.newest else ""
        lines.append(f"{g.id:<27} {g.timeline:>8}  {_local_time(g.created, round_up=True):<25}  {_local_time(g.until):<25}"
                     f"  {g.size_bytes / 1e6:.1f} MB{newest}")
    return lines


def _local_time(epoch: float, round_up: bool = False) -> str:
    """`epoch` as local ISO 8601 to the second, which --until reads back (`round_up`: the first
    whole second at or after it, for a window's start)."""
    return datetime.fromtimestamp(math.ceil(epoch) if round_up else int(epoch)).astimezone().isoformat(timespec="seconds")


def _window_end(manifest: Manifest, generation: Generation) -> float:
    """The latest time `--until` chooses this generation for: when the next generation's base was
    complete, or when the last WAL of its timeline was shipped, whichever is earlier."""
    wal_range = manifest.range_for(generation)
    end = max(generation.created, wal_range.shipped_at) if wal_range else generation.created
    later = manifest.generations[manifest.generations.index(generation) + 1:]
    return min(end, later[0].created) if later else end


def restore_if_needed(settings: Settings, progress: Progress = print) -> str | None:
    """Before Postgres starts: restore the newest complete state into an empty or missing data
    directory. A data directory that holds a database is kept. None: nothing to restore."""
    pgdata = settings.pgdata
    if (pgdata / "PG_VERSION").exists():
        return _describe_kept(settings)
    if pgdata.exists() and any(pgdata.iterdir()):
        raise ConfigError(f"{pgdata} is not empty but holds no database", "move it away, or point PGDATA_DIR at an empty folder")
    manifest = load_manifest(settings)
    if manifest is None or not manifest.generations:
        return None
    errors = []
    for generation in reversed(manifest.generations):
        try:
            return _restore(settings, manifest, generation, manifest.end_segment(generation), None, progress)
        except SnapshotError as exc:
            errors.append(str(exc))
            progress(f"generation {generation.id} cannot be restored ({exc}); trying an older one")
    raise SnapshotError(f"no generation in {settings.snapshots_dir} could be restored: {'; '.join(errors)}",
                        "check the root folder, or start empty by moving snapshots/ aside")


def restore(settings: Settings, generation: str | None = None, until: str | None = None,
            progress: Progress = print, move_aside: bool = False) -> str:
    """`mfcolab restore`: restore a generation (default: the newest, or with `until` the newest
    whose base is older than that time) on purpose, optionally only up to a point in time. The
    stack must be down. Every check runs before an existing database is moved aside (only when
    `move_aside` is set); if the restore fails after that, the database is put back."""
    _require_stack_down(settings)
    manifest = load_manifest(settings)
    if manifest is None or not manifest.generations:
        raise SnapshotError(f"no snapshot in {settings.snapshots_dir}", "check --root")
    target_time = parse_until(until) if until else None
    chosen = _choose(manifest, generation, target_time)
    _check_base_files(settings, chosen)
    end = manifest.end_segment(chosen) if target_time is None else _timeline_end(manifest, chosen)
    pgdata = settings.pgdata
    aside = None
    if pgdata.exists() and any(pgdata.iterdir()):
        if not move_aside:
            raise ConfigError(f"{pgdata} already holds a database", "mfcolab restore --move-aside (keeps it under a new name)")
        aside = _free_name(pgdata.with_name(f"{pgdata.name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}"))
        os.rename(pgdata, aside)
        progress(f"moved the current database aside to {aside}")
    try:
        return _restore(settings, manifest, chosen, end, target_time, progress)
    except BaseException as exc:
        if aside is None:
            raise
        _put_back(pgdata, aside)
        if not isinstance(exc, Exception):
            raise
        hint = exc.hint if isinstance(exc, MfcolabError) else "mfcolab restore --list, then another --generation"
        raise SnapshotError(f"restore failed ({exc.message if isinstance(exc, MfcolabError) else exc});"
                            f" the database that was there is back in {pgdata}", hint) from exc


def _choose(manifest: Manifest, generation: str | None, target_time: datetime | None) -> Generation:
    """The generation asked for; with only a time, the newest whose base was complete before it."""
    if generation:
        chosen = manifest.find(generation)
        if target_time is not None and target_time.timestamp() <= chosen.created:
            raise ConfigError(f"--until {_local_time(target_time.timestamp())} is before generation {chosen.id}"
                              f" was complete ({_local_time(chosen.created, round_up=True)})",
                              "a later --until, or an older --generation (mfcolab restore --list)")
        return chosen
    if target_time is None:
        newest = manifest.newest()
        if newest is None:
            raise SnapshotError("no complete generation in the root folder", "check --root")
        return newest
    older = [g for g in manifest.generations if g.created < target_time.timestamp()]
    if not older:
        oldest = manifest.generations[0]
        raise ConfigError(f"--until {_local_time(target_time.timestamp())} is before the oldest restorable time,"
                          f" {_local_time(oldest.created, round_up=True)} (generation {oldest.id})",
                          "a later --until (mfcolab restore --list shows every window)")
    return older[-1]


def _timeline_end(manifest: Manifest, generation: Generation) -> int:
    """Last shipped segment of the generation's timeline: replay toward a time may pass the point
    where a later base began (recovery stops at the time)."""
    wal_range = manifest.range_for(generation)
    return wal_range.last if wal_range else generation.start_segment - 1


def _put_back(pgdata: Path, aside: Path) -> None:
    """Undo the move aside after a failed restore (what the failed restore left is ours to remove)."""
    if pgdata.exists():
        shutil.rmtree(pgdata)
    os.rename(aside, pgdata)


# --- the restore itself --------------------------------------------------------------------------

def _restore(settings: Settings, manifest: Manifest, generation: Generation, end: int,
             target_time: datetime | None, progress: Progress) -> str:
    started = time.monotonic()
    pgdata = settings.pgdata
    work = pgdata.with_name(f".{pgdata.name}.restoring")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        progress(f"restoring generation {generation.id}: unpacking the base backup ({generation.base_bytes / 1e6:.1f} MB)")
        _unpack_base(settings, generation, work)
        wal_dir = layout.restore_wal_dir(settings)
        shutil.rmtree(wal_dir, ignore_errors=True)
        wal_dir.mkdir(parents=True)
        last = _fetch_wal(settings, manifest, generation, end, wal_dir, progress)
        if target_time is not None:
            target_time = _reachable_target(settings, wal_dir, target_time, progress)
        _configure_recovery(work, wal_dir, target_time)
        log.info("recovery of generation %s: WAL %s..%s from %s, %s", generation.id, generation.start_segment, end,
                 wal_dir, f"stopping after {target_time.isoformat()}" if target_time else "replaying all of it")
        if pgdata.exists():
            pgdata.rmdir()  # empty (checked by the callers)
        os.rename(work, pgdata)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    postgres.give_to_server_user(settings, pgdata, 0o700)
    postgres.give_to_server_user(settings, wal_dir, 0o700)
    until = "" if target_time is None else f" up to {target_time.isoformat()}"
    description = (f"restored generation {generation.id} (base {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(generation.created))},"
                   f" WAL through {last or 'the base'}{until}) into {pgdata} in {time.monotonic() - started:.1f} s;"
                   " Postgres finishes recovery when it starts")
    progress(description)
    return description


def _unpack_base(settings: Settings, generation: Generation, work: Path) -> None:
    _check_base_files(settings, generation)
    folder = layout.base_dir(settings, generation.id)
    _extract(folder / "base.tar.gz", work)
    (work / "pg_wal").mkdir(exist_ok=True)
    _extract(folder / "pg_wal.tar.gz", work / "pg_wal")
    _check_base_wal(work / "pg_wal", generation)
    (work / "pg_wal" / "archive_status").mkdir(exist_ok=True)
    postgres.write_own_config(work)


def _check_base_files(settings: Settings, generation: Generation) -> None:
    folder = layout.base_dir(settings, generation.id)
    for name, size in generation.files.items():
        path = folder / name
        try:
            actual = path.stat().st_size
        except OSError as exc:
            raise SnapshotError(f"{path} is missing: {exc}", "restore an older generation") from exc
        if actual != size:
            raise SnapshotError(f"{path} has {actual} bytes, the manifest says {size}", "restore an older generation")


def _check_base_wal(pg_wal: Path, generation: Generation) -> None:
    """The segments that came with the base backup, checked like every shipped one."""
    for path in sorted(pg_wal.iterdir()):
        if layout.is_segment(path.name):
            _timeline, segno = layout.parse_segment(path.name, generation.segment_size)
            walfile.check_segment(path, path.read_bytes(), generation.segment_size, segno, generation.system_identifier)


class _NotPlain(tarfile.FilterError):
    def __init__(self, member: tarfile.TarInfo) -> None:
        super().__init__(f"{member.name!r} is not a plain file or folder")
        self.tarinfo = member


def _plain_only(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """Regular files and folders inside `dest`, owned by whoever extracts them (see the `data`
    filter): an archive from the shared folder gets no link, device, absolute or `..` path."""
    member = tarfile.data_filter(member, dest)
    if not (member.isreg() or member.isdir()):
        raise _NotPlain(member)
    return member


def _extract(archive: Path, dest: Path) -> None:
    try:
        with open_regular(archive) as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar:
            tar.extractall(dest, filter=_plain_only)
    except tarfile.FilterError as exc:
        raise SnapshotError(f"{archive} is refused: {exc}", "restore an older generation; someone wrote this archive by hand") from exc
    except (OSError, EOFError, tarfile.TarError) as exc:
        reason = exc.strerror if isinstance(exc, RefusedFile) else exc
        raise SnapshotError(f"{archive} is damaged or unreadable: {reason}", "restore an older generation") from exc


def _fetch_wal(settings: Settings, manifest: Manifest, generation: Generation, end: int, wal_dir: Path,
               progress: Progress) -> str | None:
    """Decompress the generation's WAL segments (and every timeline history file) into the local
    folder restore_command reads. Stops at the first missing or damaged segment: the database
    then ends there, still consistent. Returns the last segment name."""
    source = layout.wal_dir(settings, generation.system_identifier)
    for entry in manifest.history:
        system_identifier, name = entry.split("/", 1)
        piece = source / layout.wal_piece(name)
        if system_identifier == generation.system_identifier and layout.is_history(name) and piece.exists():
            history = _gunzip_piece(piece, walfile.MAX_HISTORY_BYTES)
            if len(history) > walfile.MAX_HISTORY_BYTES:
                raise walfile.RefusedWal(piece, f"it decompresses to more than {walfile.MAX_HISTORY_BYTES} bytes")
            walfile.check_history(piece, history)
            (wal_dir / name).write_bytes(history)
    wal_range = manifest.range_for(generation)
    if wal_range is None:
        return None
    last = None
    count = max(0, end - generation.start_segment + 1)
    if count:
        progress(f"fetching {count} WAL segments")
    for segno in range(generation.start_segment, end + 1):
        name = wal_range.name(segno)
        try:
            _fetch_segment(source / layout.wal_piece(name), wal_dir / name, segno, generation)
        except SnapshotError as exc:
            progress(f"WAL ends early at {name}: {exc}")
            return last
        last = name
    if wal_range.partial is not None and wal_range.partial == end + 1 and end == wal_range.last:
        name = wal_range.name(wal_range.partial)
        try:
            _fetch_segment(source / layout.partial_piece(name), wal_dir / name, wal_range.partial, generation)
            last = f"{name} (unfinished)"
        except SnapshotError as exc:
            progress(f"the unfinished last segment {name} is unusable: {exc}")
    return last


def _fetch_segment(piece: Path, dest: Path, segno: int, generation: Generation) -> None:
    """Decompress one shipped segment and check its size and header before recovery may read it."""
    data = _gunzip_piece(piece, generation.segment_size)
    walfile.check_segment(piece, data, generation.segment_size, segno, generation.system_identifier)
    dest.write_bytes(data)


def _gunzip_piece(piece: Path, max_bytes: int) -> bytes:
    """A shipped piece decompressed, at most `max_bytes` and one byte more of it (more is refused
    by the checks after): a regular file only, never through a link or from a FIFO."""
    try:
        with open_regular(piece) as raw, gzip.open(raw, "rb") as handle:
            return handle.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, RefusedFile) else exc
        raise SnapshotError(f"{piece} is damaged or unreadable: {reason}", "restore an older generation") from exc


def _configure_recovery(pgdata: Path, wal_dir: Path, target_time: datetime | None) -> None:
    """recovery.signal plus settings in postgresql.auto.conf: replay everything shipped (or up to
    `target_time`) on the backup's timeline, then promote."""
    (pgdata / "recovery.signal").write_text("")
    for stale in ("standby.signal", "postmaster.pid"):
        (pgdata / stale).unlink(missing_ok=True)
    conf = pgdata / "postgresql.auto.conf"
    kept = _without_block(conf.read_text() if conf.exists() else "")
    source = str(wal_dir).replace("'", "''")
    # A missing file is the normal end of the archive: test first so the server log stays quiet.
    command = f'test -f "{source}/%f" && cp "{source}/%f" "%p"'
    lines = [CONF_BEGIN, f"restore_command = '{command}'", "recovery_target_timeline = 'current'"]
    if target_time is not None:
        lines += [f"recovery_target_time = '{target_time.isoformat()}'", "recovery_target_action = 'promote'"]
    lines.append(CONF_END)
    conf.write_text(kept + "\n".join(lines) + "\n")


def _without_block(text: str) -> str:
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.strip() == CONF_BEGIN:
            inside = True
        elif line.strip() == CONF_END:
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out)


# --- checks --------------------------------------------------------------------------------------

def _describe_kept(settings: Settings) -> str:
    """Say why the local database is kept, and warn when the root folder holds newer data."""
    pgdata = settings.pgdata
    try:
        manifest = load_manifest(settings)
    except OSError:
        manifest = None
    newest = manifest.newest() if manifest else None
    if manifest is None or newest is None:
        return f"kept the local database in {pgdata} (the root folder holds no snapshot)"
    try:
        control = postgres.read_control_data(settings)
    except Exception as exc:  # noqa: BLE001 - a description only; Postgres will report real trouble
        return f"kept the local database in {pgdata} (could not read its control file: {exc})"
    if control.get("Database system identifier") != newest.system_identifier:
        log.warning("the local database in %s is not the one snapshotted in %s", pgdata, settings.snapshots_dir)
        return (f"kept the local database in {pgdata}; it is a different database from the snapshots in "
                f"{settings.snapshots_dir} (to use those: mfcolab down, then mfcolab restore --move-aside)")
    local_lsn = layout.parse_lsn(control["Latest checkpoint location"])
    wal_range = manifest.range_for(newest)
    shipped_end = ((wal_range.last + 1) if wal_range else newest.start_segment) * newest.segment_size
    if local_lsn + newest.segment_size < shipped_end:
        log.warning("the local database in %s is older than the newest snapshot", pgdata)
        return (f"kept the local database in {pgdata}, although the newest snapshot is newer "
                "(to use it: mfcolab down, then mfcolab restore --move-aside)")
    return f"kept the local database in {pgdata} (it is at least as new as the newest snapshot {newest.id})"


def _require_stack_down(settings: Settings) -> None:
    for pid_file in (settings.supervisor_pid_file, settings.pgdata / "postmaster.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid_alive(pid):
            raise StackStateError(f"the stack is running (pid {pid} from {pid_file})", "mfcolab down, then mfcolab restore")


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


_RELATIVE = re.compile(r"-\s*(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_until(text: str, now: float | None = None) -> datetime:
    """An --until time in UTC: ISO 8601 with an offset (or Z), a naive time (local), or a span
    before now (`-90s`, `-10m`, `-2h`, `-1d`)."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        seconds = float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
        return datetime.fromtimestamp((time.time() if now is None else now) - seconds, UTC)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"--until {text!r} is not a time",
                          "--until '2026-01-31 14:05:00' (local time), ISO 8601 with an offset, or -10m (ten minutes ago)") from exc
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC)


def _reachable_target(settings: Settings, wal_dir: Path, target_time: datetime, progress: Progress) -> datetime | None:
    """`target_time`, or None when no transaction in the fetched WAL ended after it: Postgres stops
    before the first one that did, and refuses to start if there is none, so then replay it all."""
    segments = sorted(name for name in os.listdir(wal_dir) if layout.is_segment(name))
    last = waldump.last_transaction_time(settings, wal_dir, segments) if segments else None
    if last is not None and last > target_time:
        return target_time
    ended = "holds no transaction" if last is None else f"ends with a transaction at {_local_time(last.timestamp())}"
    progress(f"{_local_time(target_time.timestamp())} is after the newest shipped WAL (it {ended}): restoring all of it")
    return None


# Ids further than this past the database's sequences are not lost runs or tasks (a local-metadata
# run, say, is named after a timestamp) and are ignored.
_PLAUSIBLE_GAP = 1_000_000


def reserve_lost_ids(dsn: str, datastore: Path) -> dict[str, int]:
    """Move the run and task sequences past ids the datastore shows were handed out.

    A restore ends at the last shipped WAL: runs and tasks created in the last seconds before a
    crash are gone from the database, but their artifacts may be in the datastore (on the shared
    folder). Reusing their ids would mix a new run with an old one's files, so skip past them."""
    root = datastore / ".metaflow"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT last_value FROM runs_v3_run_number_seq")
        run_seq = cur.fetchone()[0]  # type: ignore[index]
        cur.execute("SELECT last_value FROM tasks_v3_task_id_seq")
        task_seq = cur.fetchone()[0]  # type: ignore[index]
        lost_runs = [run for run in _numbered(root, "*/*") if run_seq < _id(run) <= run_seq + _PLAUSIBLE_GAP]
        top_run = max((_id(run) for run in lost_runs), default=run_seq)
        top_task = max((_id(task) for run in lost_runs for task in _numbered(run, "*/*")
                        if task_seq < _id(task) <= task_seq + _PLAUSIBLE_GAP), default=task_seq)
        moved = {}
        if top_run > run_seq:
            cur.execute("SELECT setval('runs_v3_run_number_seq', %s)", (top_run,))
            moved["run"] = top_run
        if top_task > task_seq:
            cur.execute("SELECT setval('tasks_v3_task_id_seq', %s)", (top_task,))
            moved["task"] = top_task
    return moved


def _numbered(folder: Path, pattern: str) -> list[Path]:
    try:
        return [path for path in folder.glob(pattern) if path.name.isdigit() and path.is_dir()]
    except OSError:
        return []


def _id(path: Path) -> int:
    return int(path.name)
