"""The mirror: ships a base backup and every completed WAL segment to <root>/snapshots/.

Postgres hands each completed WAL segment to a local staging folder (`archive_command`, see
`archive_options`). The mirror, running in the supervisor as root, works in cycles: it gzips
the staged segments into a local outbox, adds a new base backup from time to time
(`basebackup.py`) so a restore never replays much WAL, runs one rsync that puts the outbox in
the root folder (`transport.py`), then writes the manifest that names what arrived, and only
then deletes what it shipped locally. A routine new base uploads beside the cycles
(`BaseUpload`), and is named by a cycle of its own once it has arrived. A watchdog observer on
the staging folder marks work to do; the loop ships at most every `snapshot_interval` seconds.
An idle database writes nothing.
Layout: `layout.py`; the manifest: `manifest.py`; what is kept: `retention.py`; restore: `restore.py`;
what a staged file must be to ship: `walfile.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shlex
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .. import postgres
from ..errors import MfcolabError, SnapshotError
from ..settings import Settings
from ..supervisor.backoff import Backoff
from . import layout, retention, walfile
from .basebackup import BaseBackups, BaseUpload
from .manifest import Generation, Manifest, WalRange, load_manifest, save_manifest
from .transport import Outbox, Shipped, Transport
from .writer import Writer

log = logging.getLogger(__name__)

BASE_MIN_WAL_BYTES = 16 * 1024 * 1024  # compressed WAL shipped before a new base is considered
BASE_WAL_RATIO = 1.0  # ... and a new base once the WAL since the last one outweighs it
FULL_PASS_SECONDS = 60.0  # look at the staging folder even without a watchdog event
MAX_BACKOFF_SECONDS = 60.0
FAILURE_LOG_SECONDS = 300.0
FINAL_SYNC_SECONDS = 30.0


@dataclasses.dataclass
class ShipReport:
    """What one call wrote to the root folder."""

    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    segments: int = 0
    generation: str | None = None  # a new base shipped by this call

    def __str__(self) -> str:
        base = f", new base {self.generation}" if self.generation else ""
        return f"shipped {self.files} files ({self.segments} WAL segments{base}), {self.bytes / 1e6:.2f} MB in {self.seconds:.2f} s"


@dataclasses.dataclass
class Cycle:
    """What one cycle prepares before its rsync: the manifest it writes afterwards, and the
    local files (and root-folder files) to delete once that manifest is written."""

    manifest: Manifest
    planned: set[str] = dataclasses.field(default_factory=set)  # staged names taken care of
    done: list[Path] = dataclasses.field(default_factory=list)  # staged files, deleted after the manifest
    obsolete: list[Path] = dataclasses.field(default_factory=list)  # root-folder pieces the manifest drops
    generation: str | None = None  # a new base in the outbox


@dataclasses.dataclass
class LiveFacts:
    system_identifier: str
    segment_size: int
    timeline: int
    in_recovery: bool


def archive_timeout(snapshot_interval: float) -> int:
    """Seconds after which Postgres closes a segment that has writes, so it can ship.
    Together with the ship interval it bounds the loss window (about 3 + 5 s at the defaults)."""
    if snapshot_interval <= 0:
        return 60
    return max(1, min(60, math.ceil(snapshot_interval * 0.6)))


def prepare_staging(settings: Settings) -> Path:
    """The local folder archive_command writes to, owned by the server user."""
    staging = settings.wal_staging_dir
    staging.mkdir(parents=True, exist_ok=True)
    postgres.give_to_server_user(settings, staging)
    return staging


def archive_options(settings: Settings) -> dict[str, str]:
    """Server options that make Postgres hand every completed WAL segment to the staging folder.
    Creates that folder (owned by the server user) as a side effect."""
    staging = shlex.quote(str(prepare_staging(settings))).replace("%", "%%")
    # Copy under a temporary name, then rename: the mirror only ever sees whole segments.
    command = f"cp %p {staging}/%f.tmp && mv -f {staging}/%f.tmp {staging}/%f"
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": command,
        "archive_timeout": str(archive_timeout(settings.snapshot_interval)),
        "max_wal_senders": "4",  # pg_basebackup -X stream uses two
        "wal_compression": "on",  # full-page images compressed (pglz: the wheel has no lz4/zstd)
        "full_page_writes": "on",  # required: base backups copy pages while they change
        "checkpoint_timeout": "15min",  # fewer checkpoints, fewer full-page images in the WAL we ship
        "max_wal_size": "256MB",
        "min_wal_size": "32MB",
    }


class _StagingEvents(FileSystemEventHandler):
    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "moved", "closed", "modified"):
            self.mirror.mark_dirty()


class Mirror:
    """Runs inside the supervisor. `start()` launches the observer and the loop; every step the
    loop takes is a public method (`sync_once`, `snapshot`, `final_snapshot`) tests call directly."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.dsn = dsn
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._dirty = True
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._manifest: Manifest | None = None
        self._facts: LiveFacts | None = None
        self._timeline_seen = 0
        self._transport = Transport()  # MissingBinaryError without rsync
        self._outbox = Outbox(layout.outbox_dir(settings), settings.snapshots_dir)
        self._bases = BaseBackups(settings)
        self._writer = Writer(settings)
        self._upload = BaseUpload(self._bases, Outbox(layout.base_outbox_dir(settings), settings.snapshots_dir),
                                  Transport(self._transport.rsync), self._writer.ensure, self._adopt_base)
        self._state = "idle"
        self._reason = ""
        self._backoff = Backoff(max(settings.snapshot_interval, 1.0), MAX_BACKOFF_SECONDS)
        self._failing_since: float | None = None
        self._last_failure_log = 0.0
        self._swept = False
        self._refused: dict[str, str] = {}  # staged name -> why it was refused (logged once)
        self.last_report: ShipReport | None = None
        prepare_staging(settings)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the observer and the loop; with snapshot_interval 0 neither runs."""
        if self.settings.snapshot_interval <= 0 or self._thread is not None:
            return
        self._stopping.clear()
        observer = Observer()
        observer.schedule(_StagingEvents(self), str(self.settings.wal_staging_dir), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._wake.set()  # first cycle at once: after a restore or initdb nothing of this server is restorable yet
        self._thread = threading.Thread(target=self._loop, name="mfcolab-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and the observer; an unfinished base backup or rsync is abandoned."""
        self._stopping.set()
        self._wake.set()
        self._upload.abort()
        self._bases.abort()
        self._transport.abort()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def mark_dirty(self) -> None:
        self._dirty = True
        self._wake.set()

    # --- public steps --------------------------------------------------------------------

    def sync_once(self) -> ShipReport:
        """Ship what is staged now (and a new base if one is due)."""
        return self._guarded(force_base=False)

    def snapshot(self) -> ShipReport:
        """Take a new base backup now and ship it with everything staged (after a routine
        base that is uploading, which must finish first: one base at a time)."""
        self._upload.wait()
        return self._guarded(force_base=True)

    def ensure_base(self) -> ShipReport | None:
        """Before a clean stop, while Postgres still runs: if the root folder holds no complete
        generation of this server's timeline (a stop within seconds of initdb or a restore), take
        one now, since the final snapshot can only extend an existing one. None: one exists."""
        with self._lock:
            facts = self._live_facts(required=True)
            if facts is None or facts.in_recovery:
                return None
            newest = self._manifest_or_load().newest(facts.system_identifier)
            if newest is not None and newest.timeline == max(facts.timeline, self._timeline_seen):
                return None
            return self._guarded(force_base=False)

    def final_snapshot(self) -> ShipReport:
        """After Postgres stopped cleanly: ship every staged segment and the unfinished last one,
        so nothing acknowledged is lost. Retries for up to FINAL_SYNC_SECONDS."""
        self.stop()
        deadline = time.monotonic() + FINAL_SYNC_SECONDS
        delay = 0.5
        while True:
            try:
                with self._lock:
                    return self._run(self._final_cycle, "final snapshot")
            except (OSError, MfcolabError, psycopg2.Error) as exc:
                self._record_failure(exc)
                if time.monotonic() + delay > deadline or self._writer.superseded_by is not None:
                    raise SnapshotError(f"final snapshot failed: {exc}", f"check that {self.settings.root} is writable, then mfcolab snapshot") from exc
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def info(self) -> dict[str, Any]:
        manifest = self._manifest
        newest = manifest.newest() if manifest else None
        info: dict[str, Any] = {"state": self._state, "generations": len(manifest.generations) if manifest else 0}
        if self._state == "failing":
            info["reason"] = self._reason
            info["failures"] = self._backoff.failures
        if manifest is not None and newest is not None:
            until = manifest.restored_until(newest)
            info.update(generation=newest.id, age_s=round(time.time() - until, 1), size_bytes=newest.base_bytes + newest.wal_bytes)
        if self.last_report is not None:
            info["last_cycle"] = str(self.last_report)
        if self._upload.generation_id is not None:
            info["new_base"] = self._upload.generation_id
        if self._upload.backoff.failures:
            info["base_error"] = self._upload.error
        return info

    def healthy(self) -> bool:
        return self._state != "failing" and (self._thread is None or self._thread.is_alive())

    # --- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        interval = self.settings.snapshot_interval
        last_cycle = -math.inf
        last_full_pass = time.monotonic()
        while not self._stopping.is_set():
            self._wake.wait(timeout=interval)
            self._wake.clear()
            now = time.monotonic()
            wait = max(last_cycle + interval, self._backoff.retry_at) - now
            if wait > 0 and self._stopping.wait(wait):
                break
            if self._stopping.is_set():
                break
            if not self._dirty and time.monotonic() - last_full_pass < FULL_PASS_SECONDS:
                continue
            last_cycle = time.monotonic()
            last_full_pass = last_cycle
            try:
                self.sync_once()
            except MfcolabError:
                pass  # recorded by _guarded; the next attempt waits for the backoff

    def _guarded(self, force_base: bool) -> ShipReport:
        with self._lock:
            self._dirty = False
            try:
                return self._run(lambda r: self._sync(r, force_base), "snapshot" if force_base else "sync")
            except (OSError, MfcolabError, psycopg2.Error) as exc:
                self._dirty = True
                self._record_failure(exc)
                raise SnapshotError(f"mirror cycle failed: {exc}", f"check that {self.settings.snapshots_dir} is writable") from exc

    def _run(self, step: Any, what: str) -> ShipReport:
        started = time.monotonic()
        report = ShipReport()
        self._state = "shipping"
        step(report)
        report.seconds = time.monotonic() - started
        self.last_report = report
        self._record_success()
        if report.files:
            log.info("mirror %s: %s", what, report)
        return report

    def _record_success(self) -> None:
        failures = self._backoff.reset()
        if failures:
            log.warning("mirror recovered after %d failed attempts", failures)
        self._state, self._reason = "idle", ""
        self._failing_since = None

    def _record_failure(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._backoff.failed(now)
        self._state, self._reason = "failing", str(exc)
        if self._failing_since is None:
            self._failing_since = now
        if self._backoff.failures == 1 or now - self._last_failure_log >= FAILURE_LOG_SECONDS:
            self._last_failure_log = now
            log.warning("mirror: shipping to %s failed (%d consecutive): %s; the last complete snapshot stays current, retrying",
                        self.settings.snapshots_dir, self._backoff.failures, exc)
        self._manifest = None  # read it again: a failed write may or may not have landed

    # --- one cycle: plan into the outbox, one rsync, then the manifest -------------------------

    def _sync(self, report: ShipReport, force_base: bool) -> None:
        cycle = self._begin()
        held = self._plan_staged(cycle, report, final=False)
        facts = self._live_facts(required=force_base or held or cycle.manifest.newest() is None)
        base_failure: BaseException | None = None
        due = None if facts is None or self._upload.running else self._base_due(cycle.manifest, facts, held, force_base)
        if due == "routine" and facts is not None and not self._stopping.is_set() and self._upload.may_start():
            self._upload.start(layout.format_generation(time.time()), facts.segment_size)
        elif due == "now" and facts is not None:
            try:
                if self._plan_base(cycle, facts, report):
                    self._plan_staged(cycle, report, final=False)  # segments archived while the base ran
            except (OSError, SnapshotError, psycopg2.Error) as exc:
                base_failure = exc  # the WAL planned so far still ships; the base is retried
        self._commit(cycle, report)
        if base_failure is not None:
            raise base_failure

    def _adopt_base(self, generation: Generation, shipped: Shipped) -> None:
        """A routine base arrived: the next manifest names it (with the WAL staged meanwhile)."""
        with self._lock:
            try:
                self._run(lambda report: self._adopt_cycle(report, generation, shipped), "new base")
            except (OSError, MfcolabError, psycopg2.Error) as exc:
                self._dirty = True
                self._record_failure(exc)

    def _adopt_cycle(self, report: ShipReport, generation: Generation, shipped: Shipped) -> None:
        cycle = self._begin()
        report.files, report.bytes = shipped.files, shipped.bytes
        self._plan_staged(cycle, report, final=False)
        self._add_generation(cycle, generation, report)
        self._commit(cycle, report)

    def _final_cycle(self, report: ShipReport) -> None:
        cycle = self._begin()
        self._plan_staged(cycle, report, final=True)
        self._plan_tail(cycle, report)
        self._commit(cycle, report)

    def _begin(self) -> Cycle:
        """A fresh outbox: what a failed cycle left there is prepared again from staging."""
        cycle = Cycle(self._manifest_or_load().copy())
        self._outbox.clear()
        return cycle

    def _commit(self, cycle: Cycle, report: ShipReport) -> None:
        """Ship the outbox, then write the manifest that names it (trimmed to the kept
        generations), then delete what shipped. A failure anywhere leaves the old manifest."""
        names_a_base = cycle.generation is not None  # in the outbox, or a routine one already shipped
        if self._outbox.files() or cycle.obsolete or names_a_base or not self._swept:
            self._writer.ensure()  # this cycle writes to the root folder: only while it is ours
        shipped = self._transport.ship(self._outbox)
        report.files += shipped.files
        report.bytes += shipped.bytes
        manifest, trimmed = retention.retained(cycle.manifest, self.settings.keep_generations)
        if shipped.files or trimmed or names_a_base:
            report.bytes += save_manifest(self.settings, manifest)
            report.files += 1
        self._manifest = manifest
        for path in cycle.done + cycle.obsolete:
            path.unlink(missing_ok=True)
        self._outbox.clear()
        if cycle.generation is not None:
            self._bases.clear_staging()
            shutil.rmtree(layout.restore_wal_dir(self.settings), ignore_errors=True)  # recovery is over
        if trimmed or cycle.generation is not None or not self._swept:
            retention.sweep(self.settings.snapshots_dir, manifest)
            self._swept = True

    def _manifest_or_load(self) -> Manifest:
        # A stack that lost the root folder to a newer one does no work for it (no base backup)
        # and leaves its files alone (the newer stack's rsync has temporary files there).
        self._writer.refuse_if_superseded()
        if self._manifest is None:
            if not self._upload.running:  # its rsync's temporary files are not stale
                layout.remove_stale_temps(self.settings.snapshots_dir)
            self._manifest = load_manifest(self.settings) or Manifest()
        return self._manifest

    def _staged(self) -> tuple[list[str], list[str]]:
        """(history files, segments) waiting in the staging folder, in shipping order."""
        history, segments = [], []
        for name in sorted(os.listdir(self.settings.wal_staging_dir)):
            if layout.is_history(name):
                history.append(name)
            elif layout.is_segment(name):
                segments.append(name)
            elif name.endswith((".partial", ".backup")):
                # A promoted timeline's old tail and backup history files: not needed for restore.
                (self.settings.wal_staging_dir / name).unlink(missing_ok=True)
        return history, segments

    def _plan_staged(self, cycle: Cycle, report: ShipReport, final: bool) -> bool:
        """Put history files and every segment that extends a shipped range in the outbox.
        Returns True if a staged segment cannot be shipped (a gap, or a timeline without a base yet)."""
        history, segments = (
            [name for name in names if name not in cycle.planned] for names in self._staged()
        )
        if not history and not segments:
            return False
        manifest = cycle.manifest
        facts = self._facts or self._live_facts(required=True)
        if facts is None:
            raise SnapshotError(f"cannot read the identity of the server in {self.settings.pgdata}", "mfcolab logs postgres")
        staging = self.settings.wal_staging_dir
        folder = layout.wal_dir(self.settings, facts.system_identifier)
        for name in history:
            data = self._read_staged(staging / name, None, facts)
            if data is None:
                continue
            self._outbox.add_gzip(data, folder / layout.wal_piece(name))
            entry = f"{facts.system_identifier}/{name}"
            if entry not in manifest.history:
                manifest.history.append(entry)
            self._timeline_seen = max(self._timeline_seen, layout.history_timeline(name))
            cycle.planned.add(name)
            cycle.done.append(staging / name)
        held = False
        for name in segments:
            timeline, segno = layout.parse_segment(name, facts.segment_size)
            self._timeline_seen = max(self._timeline_seen, timeline)
            wal_range = _range_ending_before(manifest, facts, timeline, segno)
            if wal_range is not None:
                data = self._read_staged(staging / name, segno, facts)
                if data is None:
                    held = True  # a gap until Postgres stages the real segment under that name
                    continue
                written = self._outbox.add_gzip(data, folder / layout.wal_piece(name))
                report.segments += 1
                wal_range.last, wal_range.bytes, wal_range.shipped_at = segno, wal_range.bytes + written, time.time()
                if wal_range.partial is not None and wal_range.partial <= segno:
                    cycle.obsolete.append(folder / layout.partial_piece(name))
                    wal_range.partial, wal_range.partial_bytes = None, 0
                newest = manifest.newest(facts.system_identifier)
                if newest is not None and wal_range.covers_start(newest):
                    newest.wal_bytes += written
            elif not (_already_shipped(manifest, facts, timeline, segno) or _before_newest_base(manifest, facts, timeline, segno)):
                held = True
                continue
            cycle.planned.add(name)
            cycle.done.append(staging / name)
        return held and not final

    def _read_staged(self, path: Path, segno: int | None, facts: LiveFacts) -> bytes | None:
        """A staged segment (or history file when `segno` is None), checked; None when refused.
        A refused file is logged once, left in place and never counts as shipped."""
        try:
            if segno is None:
                data = walfile.read_staged(path, walfile.MAX_HISTORY_BYTES)
                walfile.check_history(path, data)
                return data
            return walfile.read_segment(path, facts.segment_size, segno, facts.system_identifier)
        except walfile.RefusedWal as exc:
            if self._refused.get(path.name) != exc.reason:
                self._refused[path.name] = exc.reason
                log.warning("mirror: %s; it is not shipped", exc)
            return None

    def _live_facts(self, required: bool) -> LiveFacts | None:
        """System identifier, segment size and timeline of the running server (cached)."""
        cached = self._facts
        if cached is not None and not required and not cached.in_recovery and self._timeline_seen <= cached.timeline:
            return self._facts
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=5)
        except psycopg2.Error:
            if self._facts is not None or not required:
                return self._facts
            return self._facts_from_control_file()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT system_identifier::text FROM pg_control_system()")
                system_identifier = str(cur.fetchone()[0])  # type: ignore[index]
                cur.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'")
                segment_size = int(cur.fetchone()[0])  # type: ignore[index]
                in_recovery = postgres.in_recovery(cur)
                timeline = self._timeline_seen
                if not in_recovery:
                    cur.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")
                    timeline = max(timeline, int(str(cur.fetchone()[0])[:8], 16))  # type: ignore[index]
        finally:
            conn.close()
        self._facts = LiveFacts(system_identifier, segment_size, timeline, in_recovery)
        self._timeline_seen = max(self._timeline_seen, timeline)
        return self._facts

    def _facts_from_control_file(self) -> LiveFacts:
        control = postgres.read_control_data(self.settings)
        self._facts = LiveFacts(
            control["Database system identifier"], int(control["Bytes per WAL segment"]),
            int(control["Latest checkpoint's TimeLineID"]), False,
        )
        return self._facts

    def _base_due(self, manifest: Manifest, facts: LiveFacts, held: bool, force: bool) -> str | None:
        """"now": this cycle takes a base (asked for; the first of this server or timeline; WAL
        that cannot ship without one). "routine": the WAL since the newest base outweighs it, so
        a new one uploads beside the cycles. None: no base."""
        if facts.in_recovery:
            return None  # a base must come from the promoted server, on its own timeline
        newest = manifest.newest(facts.system_identifier)
        if force or held or newest is None or newest.timeline != max(facts.timeline, self._timeline_seen):
            return "now"
        if newest.wal_bytes >= max(BASE_MIN_WAL_BYTES, BASE_WAL_RATIO * newest.base_bytes):
            return "routine"
        return None

    # --- base backups ---------------------------------------------------------------------

    def _plan_base(self, cycle: Cycle, facts: LiveFacts, report: ShipReport) -> bool:
        """A new base backup in the outbox, and its generation in the cycle's manifest."""
        timeline = max(facts.timeline, self._timeline_seen)
        history = f"{facts.system_identifier}/{timeline:08X}.history"
        if timeline > 1 and history not in cycle.manifest.history:
            self._dirty = True  # the history file has not shipped yet: a restore must never reuse this timeline
            return False
        generation = self._bases.take(layout.format_generation(time.time()), facts.segment_size, self._outbox)
        self._add_generation(cycle, generation, report)
        return True

    def _add_generation(self, cycle: Cycle, generation: Generation, report: ShipReport) -> None:
        manifest = cycle.manifest
        manifest.generations.append(generation)
        if manifest.range_for(generation) is None:
            manifest.wal.append(WalRange(generation.system_identifier, generation.timeline, generation.segment_size,
                                         generation.start_segment, generation.start_segment - 1, shipped_at=time.time()))
        cycle.generation = report.generation = generation.id

    # --- clean stop ----------------------------------------------------------------------

    def _plan_tail(self, cycle: Cycle, report: ShipReport) -> None:
        """Put the WAL Postgres wrote after its last archived segment in the outbox, ending with
        the unfinished segment that holds the shutdown checkpoint."""
        control = postgres.read_control_data(self.settings)
        if control.get("Database cluster state") != "shut down":
            log.warning("final snapshot: Postgres did not stop cleanly; its unfinished WAL segment is not shipped")
            return
        facts = self._facts or self._facts_from_control_file()
        segment_size = int(control["Bytes per WAL segment"])
        timeline = int(control["Latest checkpoint's TimeLineID"])
        end = layout.parse_lsn(control["Latest checkpoint location"]) // segment_size
        manifest = cycle.manifest
        candidates = [r for r in manifest.wal if r.system_identifier == facts.system_identifier and r.timeline == timeline and r.last < end]
        if not candidates:
            return
        wal_range = max(candidates, key=lambda r: r.last)
        folder = layout.wal_dir(self.settings, facts.system_identifier)
        pg_wal = self.settings.pgdata / "pg_wal"
        for segno in range(wal_range.last + 1, end + 1):
            name = wal_range.name(segno)
            piece = layout.wal_piece(name) if segno < end else layout.partial_piece(name)
            try:
                data = walfile.read_segment(pg_wal / name, segment_size, segno, facts.system_identifier)
            except walfile.RefusedWal as exc:
                log.warning("final snapshot: %s; the WAL shipped ends before it", exc)
                break
            written = self._outbox.add_gzip(data, folder / piece)
            report.segments += 1
            if segno < end:
                wal_range.last, wal_range.bytes = segno, wal_range.bytes + written
            else:
                wal_range.partial, wal_range.partial_bytes = segno, written
        wal_range.shipped_at = time.time()


def _range_ending_before(manifest: Manifest, facts: LiveFacts, timeline: int, segno: int) -> WalRange | None:
    for wal_range in manifest.wal:
        if wal_range.system_identifier == facts.system_identifier and wal_range.timeline == timeline and wal_range.last + 1 == segno:
            return wal_range
    return None


def _already_shipped(manifest: Manifest, facts: LiveFacts, timeline: int, segno: int) -> bool:
    return any(
        r.system_identifier == facts.system_identifier and r.timeline == timeline and r.first <= segno <= r.last
        for r in manifest.wal
    )


def _before_newest_base(manifest: Manifest, facts: LiveFacts, timeline: int, segno: int) -> bool:
    """A segment older than the newest base of its timeline that no range can take: useless."""
    return any(
        g.system_identifier == facts.system_identifier and g.timeline == timeline and segno < g.start_segment
        for g in manifest.generations
    )
