"""Base backups: pg_basebackup into a local folder, then into the outbox as one generation.

pg_basebackup runs as the server user over the Unix socket (tar format, gzip level 1, `-X
stream` so the base carries the WAL that makes it consistent) into `<local>/base-staging`.
Its files then move into the outbox under `base/<generation>/`, with the generation record
beside them; the mirror's next rsync ships them and the manifest names the generation.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from pathlib import Path

from . import postgres, snapshots
from .errors import SnapshotError
from .settings import Settings
from .snapshots import Generation
from .transport import Outbox

BASE_FILES = ("base.tar.gz", "pg_wal.tar.gz", "backup_manifest")
TIMEOUT_SECONDS = 6 * 3600


class BaseBackups:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None

    def take(self, generation_id: str, segment_size: int, outbox: Outbox) -> Generation:
        """Run pg_basebackup and put the generation (its pieces, then its record) in the outbox."""
        local = self._run(generation_id)
        generation = generation_from_backup(generation_id, local, segment_size)
        folder = snapshots.base_dir(self.settings, generation_id)
        try:
            for name in BASE_FILES:
                generation.files[name] = outbox.add_moved(local / name, folder / name)
            record = snapshots.json_bytes(dataclasses.asdict(generation))
            outbox.add_bytes(record, folder / snapshots.GENERATION_RECORD)
        except BaseException:
            outbox.discard(folder)  # no half a base in the outbox
            raise
        return generation

    def abort(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def clear_staging(self) -> None:
        shutil.rmtree(snapshots.base_staging_dir(self.settings), ignore_errors=True)

    def _run(self, generation_id: str) -> Path:
        staging = snapshots.base_staging_dir(self.settings)
        self.clear_staging()
        staging.mkdir(parents=True)
        postgres.give_to_server_user(staging)
        target = staging / generation_id
        argv = [
            str(postgres.pg_binary("pg_basebackup")), "-D", str(target), "--format=tar", "--wal-method=stream",
            "--checkpoint=fast", "--compress=gzip:1", "--no-sync", f"--label=mfcolab {generation_id}",
            "-h", str(self.settings.run_dir / "pg"), "-p", str(self.settings.pg_port), "-U", postgres.DB_USER,
        ]
        process = subprocess.Popen(argv, user=postgres.server_user(), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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


def generation_from_backup(generation_id: str, local: Path, segment_size: int) -> Generation:
    """The generation record of a finished pg_basebackup, from its backup_manifest."""
    backup = json.loads((local / "backup_manifest").read_bytes())
    ranges = backup["WAL-Ranges"]
    start = snapshots.parse_lsn(ranges[0]["Start-LSN"])
    return Generation(
        id=generation_id, system_identifier=str(backup["System-Identifier"]), timeline=int(ranges[-1]["Timeline"]),
        segment_size=segment_size, start_lsn=ranges[0]["Start-LSN"], end_lsn=ranges[-1]["End-LSN"],
        start_segment=start // segment_size, files={}, created=time.time(),
    )
