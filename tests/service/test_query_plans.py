"""A task found by its id stays one primary-key lookup however large its step grows.

The service's statements are prepared once per connection and run on generic plans built
from the statistics of the moment. Here the statistics are taken while the step holds one task,
as in a new database, then the step grows to thousands of tasks (a large foreach): every
statement that finds a task by its numeric id must still read a handful of pages, not the step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from mfcolab import schema
from mfcolab.service import sql
from mfcolab.service.inputs import run_key, task_key

FLOW, STEP, TASKS = "PlanFlow", "wide", 4000
MAX_PAGES = 4  # the primary key's root and leaf, one heap page


@pytest.fixture(scope="module")
def wide_step(pg_dsn: str) -> Iterator[tuple[str, int, int]]:
    """A database of its own holding one step of TASKS tasks, analyzed when it had one (as a new database is)."""
    admin = psycopg2.connect(pg_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS plan_test")
        cur.execute("CREATE DATABASE plan_test")
    dsn = pg_dsn.rsplit("/", 1)[0] + "/plan_test"
    schema.apply(dsn)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE tasks_v3 SET (autovacuum_enabled = false)")
        cur.execute("INSERT INTO flows_v3 (flow_id, user_name, ts_epoch) VALUES (%s, 'u', 0)", (FLOW,))
        cur.execute("INSERT INTO runs_v3 (flow_id, user_name, ts_epoch) VALUES (%s, 'u', 0) RETURNING run_number", (FLOW,))
        run = cur.fetchone()[0]
        cur.execute("INSERT INTO steps_v3 (flow_id, run_number, step_name, user_name, ts_epoch) VALUES (%s, %s, %s, 'u', 0)",
                    (FLOW, run, STEP))

        def add_tasks(count: int) -> None:
            cur.execute("INSERT INTO tasks_v3 (flow_id, run_number, step_name, user_name, ts_epoch)"
                        " SELECT %s, %s, %s, 'u', 0 FROM generate_series(1, %s)", (FLOW, run, STEP, count))

        add_tasks(1)
        cur.execute("ANALYZE")
        add_tasks(TASKS - 1)
        cur.execute("SELECT max(task_id) FROM tasks_v3")
        last = cur.fetchone()[0]
    try:
        yield dsn, run, last
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE plan_test WITH (FORCE)")
        admin.close()


def task_pages_read(dsn: str, statement: str, args: tuple[Any, ...]) -> int:
    """Shared buffers the scans of tasks_v3 touch in one execution of the statement's generic
    plan, measured on its second execution (the first loads the catalogs); rolled back."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_generic_plan")
            cur.execute(f"PREPARE probe AS {statement}")
            execute = f"EXECUTE probe ({', '.join(['%s'] * len(args))})"
            cur.execute(execute, args)
            cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {execute}", args)
            plan = cur.fetchone()[0][0]["Plan"]
        return sum(int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))
                   for node in _nodes(plan) if node.get("Relation Name") == "tasks_v3" and "Scan" in node["Node Type"])
    finally:
        conn.rollback()
        conn.close()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _task_args(run: int, task: int, *rest: Any) -> tuple[Any, ...]:
    return (FLOW, run, STEP, task, *rest)


@pytest.mark.parametrize("name", ["GET_TASK", "TASK_HEARTBEAT", "CREATE_METADATA", "CREATE_ARTIFACTS"])
def test_a_task_found_by_id_reads_a_few_pages_in_a_step_of_thousands(wide_step: tuple[str, int, int], name: str) -> None:
    dsn, run, last = wide_step
    statement = getattr(sql, name).get(run_key(str(run)), task_key(str(last)))
    rest: tuple[Any, ...] = {
        "GET_TASK": (),
        "TASK_HEARTBEAT": (10**10, 10),
        "CREATE_METADATA": (0, json.dumps([{"field_name": "f", "value": "v", "type": "t"}])),
        "CREATE_ARTIFACTS": (0, json.dumps([{"name": "a", "attempt_id": 0}])),
    }[name]
    for task in (last, last - TASKS + 1):  # the newest task, and the first one of the step
        assert task_pages_read(dsn, statement, _task_args(run, task, *rest)) <= MAX_PAGES
