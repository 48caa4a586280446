"""Base backups: pg_basebackup into a local folder, then into the outbox as one generation.

pg_basebackup runs as the server user over the Unix socket (tar format, gzip level 1, `-X
stream` so the base carries the WAL that makes it consistent) into `<local>/base-staging`.
Its files then move into an outbox under `base/<generation>/`, with the generation record
beside them; an rsync ships them and then the manifest names the generation.

A base the mirror must have before it can go on (the first of a server or of a timeline, or
one asked for) travels in the mirror's own cycle. A routine new base, taken because the WAL
since the last one outweighs it, is a `BaseUpload`: made and shipped on a thread of its own,
so WAL keeps shipping while a large base travels to a slow root folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .. import postgres
from ..errors import MfcolabError, SnapshotError
from ..settings import Settings
from ..supervisor.backoff import Backoff
from ..supervisor.process import as_user
from . import layout
from .manifest import Generation, json_bytes
from .transport import Outbox, Shipped, Transport

log = logging.getLogger(__name__)

BASE_FILES = ("base.tar.gz", "pg_wal.tar.gz", "backup_manifest")
TIMEOUT_SECONDS = 6 * 3600
RETRY_FIRST_SECONDS = 10.0  # a failed routine base is retried after this, doubling ...
RETRY_MAX_SECONDS = 600.0  # ... up to this (WAL keeps shipping meanwhile)


class BaseBackups:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None

    def take(self, generation_id: str, segment_size: int, outbox: Outbox) -> Generation:
        """Run pg_basebackup and put the generation (its pieces, then its record) in the outbox."""
        local = self._run(generation_id)
        generation = generation_from_backup(generation_id, local, segment_size)
        folder = layout.base_dir(self.settings, generation_id)
        try:
            for name in BASE_FILES:
                generation.files[name] = outbox.add_moved(local / name, folder / name)
            record = json_bytes(dataclasses.asdict(generation))
            outbox.add_bytes(record, folder / layout.GENERATION_RECORD)
        except BaseException:
            outbox.discard(folder)  # no half a base in the outbox
            raise
        return generation

    def abort(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def clear_staging(self) -> None:
        shutil.rmtree(layout.base_staging_dir(self.settings), ignore_errors=True)

    def _run(self, generation_id: str) -> Path:
        staging = layout.base_staging_dir(self.settings)
        self.clear_staging()
        staging.mkdir(parents=True)
        postgres.give_to_server_user(self.settings, staging)
        target = staging / generation_id
        argv = [
            str(postgres.pg_binary("pg_basebackup")), "-D", str(target), "--format=tar", "--wal-method=stream",
            "--checkpoint=fast", "--compress=gzip:1", "--no-sync", f"--label=mfcolab {generation_id}",
            "-h", str(self.settings.run_dir / "pg"), "-p", str(self.settings.pg_port), "-U", postgres.DB_USER,
        ]
        process = subprocess.Popen(argv, **as_user(postgres.server_user(self.settings)), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._process = process
        try:
            output, _ = process.communicate(timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise SnapshotError(f"pg_basebackup did not finish within {TIMEOUT_SECONDS} s", "mfcolab logs postgres") from None
        finally:
            self._process = None
        if process.returncode != 0:
            raise SnapshotError(f"pg_basebackup failed: {output.decode(errors='replace').strip()[-500:]}", "mfcolab logs postgres")
        return target


class BaseUpload:
    """One routine base at a time, made and shipped on its own thread. When all its files are
    in the root folder, `adopt(generation, shipped)` has the manifest name it. Until then it is
    an unnamed folder under `base/`, newer than every named one: restore ignores it and the
    sweep leaves it alone. A failure is logged and retried later with backoff."""

    def __init__(self, bases: BaseBackups, outbox: Outbox, transport: Transport,
                 before_ship: Callable[[], None], adopt: Callable[[Generation, Shipped], None]) -> None:
        self.bases = bases
        self.outbox = outbox
        self.transport = transport
        self.before_ship = before_ship  # raises if this stack may not write to the root folder
        self.adopt = adopt
        self.generation_id: str | None = None
        self.backoff = Backoff(RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
        self.error = ""
        self._aborted = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def may_start(self) -> bool:
        return not self.running and self.backoff.due(time.monotonic())

    def start(self, generation_id: str, segment_size: int) -> None:
        self._aborted.clear()
        self.generation_id = generation_id
        self._thread = threading.Thread(target=self._upload, args=(generation_id, segment_size), name="mfcolab-base", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def abort(self) -> None:
        """Kill pg_basebackup or the rsync and wait for the thread; what was shipped stays unnamed."""
        self._aborted.set()
        self.bases.abort()
        self.transport.abort()
        if self._thread is not None:
            self._thread.join(30)

    def _upload(self, generation_id: str, segment_size: int) -> None:
        started = time.monotonic()
        try:
            self.outbox.clear()
            generation = self.bases.take(generation_id, segment_size, self.outbox)
            self.before_ship()
            shipped = self.transport.ship(self.outbox)
        except (OSError, MfcolabError) as exc:
            self._finish()
            if not self._aborted.is_set():
                self._record_failure(generation_id, exc)
            return
        self._finish()
        self.backoff.reset()
        self.error = ""
        log.info("new base %s uploaded in %.1f s (%.2f MB)", generation_id, time.monotonic() - started, shipped.bytes / 1e6)
        self.adopt(generation, shipped)

    def _finish(self) -> None:
        self.outbox.clear()
        self.generation_id = None

    def _record_failure(self, generation_id: str, exc: BaseException) -> None:
        self.error = str(exc)
        delay = self.backoff.failed(time.monotonic())
        log.warning("new base %s failed (%d in a row): %s; the current generation stays current, WAL keeps"
                    " shipping, retrying in %.0f s", generation_id, self.backoff.failures, exc, delay)


def generation_from_backup(generation_id: str, local: Path, segment_size: int) -> Generation:
    """The generation record of a finished pg_basebackup, from its backup_manifest."""
    backup = json.loads((local / "backup_manifest").read_bytes())
    ranges = backup["WAL-Ranges"]
    start = layout.parse_lsn(ranges[0]["Start-LSN"])
    return Generation(
        id=generation_id, system_identifier=str(backup["System-Identifier"]), timeline=int(ranges[-1]["Timeline"]),
        segment_size=segment_size, start_lsn=ranges[0]["Start-LSN"], end_lsn=ranges[-1]["End-LSN"],
        start_segment=start // segment_size, files={}, created=time.time(),
    )
