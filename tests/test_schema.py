from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest

from mfcolab import schema

TABLES = ["flows_v3", "runs_v3", "steps_v3", "tasks_v3", "metadata_v3", "artifact_v3"]


def query(dsn: str, sql: str, *args: object) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_schema_apply_is_idempotent(pg_dsn: str) -> None:
    assert schema.apply(pg_dsn) == []
    assert schema.apply(pg_dsn) == []
    names = [row[0] for row in query(pg_dsn, "SELECT name FROM mfcolab_schema_migrations ORDER BY name")]
    assert names == [f.name for f in schema.bundled_files()]


def test_schema_records_every_upstream_goose_version(pg_dsn: str) -> None:
    versions = [row[0] for row in query(pg_dsn, "SELECT version_id FROM goose_db_version WHERE is_applied ORDER BY id")]
    assert versions[0] == 0
    assert versions[-1] == 20260706000003
    assert 20230118020300 in versions and 1 in versions
    assert len(versions) == len(set(versions))


def test_schema_has_upstream_tables_keys_and_indexes(pg_dsn: str) -> None:
    tables = {row[0] for row in query(pg_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert set(TABLES) <= tables
    pk = query(pg_dsn, """
        SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = 'tasks_v3'::regclass AND i.indisprimary""")
    assert [r[0] for r in pk] == ["task_id"]
    indexes = {row[0] for row in query(pg_dsn, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    for name in [
        "runs_v3_idx_gin_tags_combined", "runs_v3_idx_user_asc_ts_epoch_desc", "runs_v3_idx_flow_ts_runnum_desc",
        "tasks_v3_idx_flow_run_step_ts_task_desc", "metadata_v3_akey", "metadata_v3_idx_flow_run_ts_id_desc",
        "artifact_v3_idx_latest_attempt", "flows_v3_idx_ts_flow_desc", "artifact_v3_idx_str_ids_primary_key_with_task_id",
    ]:
        assert name in indexes, name
    unique = {row[0] for row in query(pg_dsn, "SELECT conname FROM pg_constraint WHERE contype = 'u'")}
    assert {"runs_v3_flow_id_run_id_key", "tasks_v3_flow_id_run_number_step_name_task_name_key"} <= unique


def test_schema_notify_triggers_send_upstream_payloads(pg_dsn: str) -> None:
    triggers = {row[0] for row in query(pg_dsn, "SELECT trigger_name FROM information_schema.triggers")}
    assert {f"notify_ui_05092024_{t}" for t in TABLES if t != "artifact_v3"} <= triggers
    listener = psycopg2.connect(pg_dsn)
    listener.autocommit = True
    try:
        with listener.cursor() as cur:
            cur.execute("LISTEN notify")
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO flows_v3 (flow_id, ts_epoch) VALUES ('TriggerFlow', 1)")
            cur.execute("INSERT INTO runs_v3 (flow_id, ts_epoch, last_heartbeat_ts) VALUES ('TriggerFlow', 1, 7) RETURNING run_number")
            run_number = cur.fetchone()[0]
        import json
        import select

        received = []
        for _ in range(20):
            select.select([listener], [], [], 0.25)
            listener.poll()
            received += [json.loads(n.payload) for n in listener.notifies]
            listener.notifies.clear()
            if len(received) >= 2:
                break
        assert {"table": "flows_v3", "schema": "public", "operation": "INSERT", "data": {"flow_id": "TriggerFlow"}} in received
        assert {"table": "runs_v3", "schema": "public", "operation": "INSERT",
                "data": {"flow_id": "TriggerFlow", "run_number": run_number, "last_heartbeat_ts": 7}} in received
    finally:
        listener.close()


def test_service_role_owns_the_tables_and_nothing_else(pg_dsn: str) -> None:
    schema.give_tables_to_service(pg_dsn, "first-password")
    schema.give_tables_to_service(pg_dsn, "role-test-password")  # again: the password is reset, nothing fails
    role = schema.SERVICE_ROLE
    service_dsn = pg_dsn.replace("postgres:test-password@", f"{role}:role-test-password@")
    assert service_dsn != pg_dsn
    owners = {row[0] for row in query(pg_dsn, "SELECT relowner::regrole::text FROM pg_class"
                                               " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S')")}
    assert owners == {role}
    rights = query(pg_dsn, "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles"
                           " WHERE rolname = %s", role)
    assert rights == [(False, False, False, False, False)]
    with psycopg2.connect(service_dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO flows_v3 (flow_id, ts_epoch) VALUES ('RoleFlow', 1) ON CONFLICT DO NOTHING")
        conn.rollback()
    for forbidden in ("COPY (SELECT 1) TO PROGRAM 'id'", "CREATE ROLE intruder SUPERUSER", "SELECT pg_read_file('PG_VERSION')",
                      "CREATE TABLE public.intruder (id int)", "ALTER SYSTEM SET archive_command = 'id'"):
        conn = psycopg2.connect(service_dsn)
        conn.autocommit = True  # ALTER SYSTEM runs outside a transaction only
        try:
            with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(forbidden)
        finally:
            conn.close()
