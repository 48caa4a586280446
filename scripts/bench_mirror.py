#!/usr/bin/env python3
"""Mirror benchmark: bytes and time written to the root folder per cycle, and restore time,
for a database of about --size-mb MB, beside a plain `cp -r` of the same data directory.

Cases: the first base (a full copy, like cp -r), an unchanged database, a slightly changed one
(--small-rows rows updated) and a heavily changed one (--heavy-fraction of all rows updated);
then a WAL cycle while a routine new base uploads beside it, and that base.
"Changed" is rows x their average width, the data a user changed.

    python scripts/bench_mirror.py --size-mb 500
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# tests/ is on the test venv's path (scripts/setup --test)
from crashtrials.components import ComponentStack
from helpers import make_settings
from mirror_helpers import execute, kill_postgres, start_archiving_postgres, switch_wal

from mfcolab.replica import mirror as mirror_module
from mfcolab.replica.mirror import Mirror, ShipReport
from mfcolab.replica.restore import restore_if_needed

ROW_SQL = "SELECT g, repeat(md5(g::text), 4) || to_char(g, 'FM0000000000') AS body, now() AS ts FROM generate_series(%s, %s) g"


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def row(case: str, report: ShipReport | None, changed: int, seconds: float | None = None, written: int | None = None) -> dict[str, Any]:
    written = report.bytes if report else written or 0
    return {
        "case": case, "seconds": round(report.seconds if report else seconds or 0.0, 2),
        "mb_written": round(written / 1e6, 2), "mb_changed": round(changed / 1e6, 2),
        "written/changed": round(written / changed, 2) if changed else None,
        "files": report.files if report else None,
    }


def routine_base_rows(settings: Any, dsn: str, mirror: Mirror, total: int, rows_added: int, changed: int,
                      db_bytes: int) -> list[dict[str, Any]]:
    """A routine new base (the WAL since the last one outweighs it, made due here at once) and a
    WAL cycle shipped while that base is still being made and uploaded on its own thread."""
    started = time.monotonic()
    mirror_module.BASE_MIN_WAL_BYTES, mirror_module.BASE_WAL_RATIO = 0, 0.0
    mirror.sync_once()  # starts the upload
    uploading = mirror.info()["new_base"]
    mirror_module.BASE_MIN_WAL_BYTES = 1 << 62  # no further one
    execute(dsn, f"INSERT INTO bench {ROW_SQL}", (total + rows_added + 1, total + 2 * rows_added))
    switch_wal(settings, dsn)
    during = mirror.sync_once()
    still = "new_base" in mirror.info()
    deadline = time.monotonic() + 3600
    while mirror.last_report is None or mirror.last_report.generation != uploading:  # uploaded and named
        if time.monotonic() > deadline or "base_error" in mirror.info():
            raise RuntimeError(f"the routine base did not arrive: {mirror.info()}")
        time.sleep(0.01)
    base_seconds = time.monotonic() - started
    return [
        row(f"{rows_added} rows appended, shipped while a routine new base uploads"
            f" ({'it was' if still else 'it was NOT'} still uploading)", during, changed),
        row("that routine new base, made and uploaded on its own thread", None, db_bytes, base_seconds, mirror.last_report.bytes),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--small-rows", type=int, default=1000)
    parser.add_argument("--heavy-fraction", type=float, default=0.2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mfcolab-bench-"))
    settings = make_settings(workdir, snapshot_interval=0)
    pg = start_archiving_postgres(settings)
    rows: list[dict[str, Any]] = []
    try:
        execute(pg.dsn, "CREATE TABLE bench (g BIGINT PRIMARY KEY, body TEXT, ts TIMESTAMPTZ)")
        total, step = 0, 200_000
        while int(execute(pg.dsn, "SELECT pg_database_size(current_database())")[0][0]) < args.size_mb * 1_000_000:
            execute(pg.dsn, f"INSERT INTO bench {ROW_SQL}", (total + 1, total + step))
            total += step
        execute(pg.dsn, "VACUUM (FREEZE, ANALYZE) bench")  # hint bits set once, as they are on a database in use
        execute(pg.dsn, "CHECKPOINT")
        db_size = int(execute(pg.dsn, "SELECT pg_database_size(current_database())")[0][0])
        width = float(execute(pg.dsn, "SELECT avg(pg_column_size(b.*)) FROM (SELECT * FROM bench LIMIT 10000) b")[0][0])
        db_bytes = du(settings.pgdata)
        print(f"database: {total} rows, {db_size / 1e6:.0f} MB; data directory with pg_wal {db_bytes / 1e6:.0f} MB", flush=True)
        mirror = Mirror(settings, pg.dsn)
        mirror.sync_once()  # ships the WAL of the load; the first base follows below
        rows.append(row("first base (full copy)", mirror.snapshot(), db_bytes))

        started = time.monotonic()
        subprocess.run(["cp", "-r", str(settings.pgdata), str(settings.root / "cp-r-copy")], check=True)
        rows.append(row("cp -r of the data directory", None, db_bytes, time.monotonic() - started, du(settings.root / "cp-r-copy")))
        shutil.rmtree(settings.root / "cp-r-copy")

        rows.append(row("unchanged", mirror.sync_once(), 0))

        execute(pg.dsn, "UPDATE bench SET ts = now(), body = md5(body) || body WHERE g %% %s = 0", (max(1, total // args.small_rows),))
        switch_wal(settings, pg.dsn)
        rows.append(row(f"slightly changed ({args.small_rows} rows updated, scattered over as many pages)", mirror.sync_once(), int(args.small_rows * width)))

        execute(pg.dsn, f"INSERT INTO bench {ROW_SQL}", (total + 1, total + args.small_rows))
        switch_wal(settings, pg.dsn)
        rows.append(row(f"slightly changed ({args.small_rows} rows appended)", mirror.sync_once(), int(args.small_rows * width)))

        heavy = int(total * args.heavy_fraction)
        execute(pg.dsn, "UPDATE bench SET ts = now(), body = md5(body) || body WHERE g <= %s", (heavy,))
        switch_wal(settings, pg.dsn)
        time.sleep(2)  # let the archiver hand over the last segments
        rows.append(row(f"heavily changed ({heavy} rows)", mirror.sync_once(), int(heavy * width)))
        rows.append(row("a forced new base after that", mirror.snapshot(), db_bytes))
        rows += routine_base_rows(settings, pg.dsn, mirror, total, args.small_rows, int(args.small_rows * width), db_bytes)
    finally:
        kill_postgres(pg)
    shutil.rmtree(settings.local)
    started = time.monotonic()
    restore_if_needed(settings, progress=lambda line: None)
    restored = time.monotonic() - started
    stack = ComponentStack(settings)
    stack.up()
    ready = time.monotonic() - started
    stack.stop()
    rows.append({"case": "restore (unpack + WAL fetch)", "seconds": round(restored, 2)})
    rows.append({"case": "restore until Postgres accepts writes", "seconds": round(ready, 2)})
    print(json.dumps(rows, indent=1))
    print("\n| case | seconds | MB written | MB changed | written/changed |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['seconds']} | {r.get('mb_written', '')} | {r.get('mb_changed', '')} | {r.get('written/changed') or ''} |")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
