"""After a restore, ids the datastore shows were handed out are not handed out again."""

from __future__ import annotations

from pathlib import Path

import psycopg2

from mfcolab.replica.restore import reserve_lost_ids


def next_ids(dsn: str) -> tuple[int, int]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO flows_v3 (flow_id, ts_epoch) VALUES ('IdsFlow', 1) ON CONFLICT DO NOTHING")
        cur.execute("INSERT INTO runs_v3 (flow_id, ts_epoch) VALUES ('IdsFlow', 1) RETURNING run_number")
        run = cur.fetchone()[0]
        cur.execute("INSERT INTO steps_v3 (flow_id, run_number, step_name, ts_epoch) VALUES ('IdsFlow', %s, 'start', 1)", (run,))
        cur.execute("INSERT INTO tasks_v3 (flow_id, run_number, step_name, ts_epoch) VALUES ('IdsFlow', %s, 'start', 1) RETURNING task_id", (run,))
        return run, cur.fetchone()[0]


def make_task_folder(datastore: Path, flow: str, run: int | str, step: str, task: int | str) -> None:
    (datastore / ".metaflow" / flow / str(run) / step / str(task)).mkdir(parents=True)


def test_restore_reserve_lost_ids_skips_ids_found_in_the_datastore(pg_dsn: str, tmp_path: Path) -> None:
    run, task = next_ids(pg_dsn)
    datastore = tmp_path / "datastore"
    make_task_folder(datastore, "LostFlow", run + 5, "start", task + 40)   # a run lost in a crash
    make_task_folder(datastore, "LostFlow", run + 5, "end", task + 41)
    make_task_folder(datastore, "OtherFlow", run - 1, "start", task + 900)  # an old run: its tasks say nothing
    make_task_folder(datastore, "LocalFlow", 1732350000123456, "start", 1)  # a local-metadata run id
    (datastore / ".metaflow" / "LostFlow" / "data").mkdir()

    moved = reserve_lost_ids(pg_dsn, datastore)

    assert moved == {"run": run + 5, "task": task + 41}
    assert next_ids(pg_dsn) == (run + 6, task + 42)
    assert reserve_lost_ids(pg_dsn, datastore) == {}, "nothing moves twice"


def test_restore_reserve_lost_ids_without_a_datastore_changes_nothing(pg_dsn: str, tmp_path: Path) -> None:
    run, task = next_ids(pg_dsn)
    assert reserve_lost_ids(pg_dsn, tmp_path / "missing") == {}
    assert next_ids(pg_dsn) == (run + 1, task + 1)
