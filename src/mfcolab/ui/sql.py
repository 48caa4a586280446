"""SQL of the UI API: the rows of each resource with their derived columns, built as JSON by
Postgres.

Each resource is a "rows" statement (a SELECT whose columns are exactly the JSON fields the
UI reads) wrapped by `listing` (filters, order, page, groups from `query.ListQuery`) or
`single`. Positional parameters follow the metadata service: $1 flow_id, $2 run key,
$3 step_name, $4 task key; `RUN(x)`/`TASK(x)` become the predicate for a numeric or a string
key (`service.sql.Keyed`). List parameters are numbered after the path's.

Statuses (documented in docs/ui.md, "How a status is decided"):

- A task attempt is `completed` or `failed` by its `attempt_ok` metadata. Without one it is
  `failed` once a later attempt has started, or once the task's heartbeat is lost
  (TASK_LOST_S; RUN_LOST_S once its run's is lost too), or when it has no heartbeat and started over a day ago; `running`
  once its `attempt` metadata exists; `pending` before. A finished attempt with no verdict
  (old clients) is `unknown`, except in steps whose name starts with `_` (`_parameters`),
  which never get a verdict: `completed`.
- A run is `completed`/`failed` by the verdict of the latest attempt of its `end` step; else
  `failed` when a task's latest attempt failed (no later attempt started) and the run's
  heartbeat is lost or was never sent; `failed` when its heartbeat is lost even with no
  failed task (the runtime died); `running` otherwise (and, for clients that send no
  heartbeat, only within a day of its start).
- No duration is negative: heartbeats are in seconds and starts in milliseconds, so every
  end time is at least the start it is measured from.
"""

from __future__ import annotations

from ..service.sql import Keyed
from .query import Columns, ListQuery

# Heartbeats arrive every 10 s (a refused early beat is retried 1.5 s later). A run's comes from
# the runtime, which runs no user code: 25 s is two missed beats, so a dead runtime is reported
# within 30 s of its last beat. A task's can be held back by a step's GIL-holding call
# (docs/heartbeats.md): alone it counts as lost after TASK_LOST_S; once its run's heartbeat is
# lost too (nothing will record its end), after RUN_LOST_S like the run.
RUN_LOST_S = 25
TASK_LOST_S = 180
DAY_MS = 86_400_000
NOW_MS = "(extract(epoch FROM now()) * 1000)::bigint"
NOW_S = "extract(epoch FROM now())::bigint"

_OK = "lower(btrim(m.value, '\"')) = 'true'"
_FAILED = "lower(btrim(m.value, '\"')) = 'false'"
_ATTEMPT_OF_VALUE = "CASE WHEN btrim(m.value, '\"') ~ '^[0-9]{1,4}$' THEN btrim(m.value, '\"')::int END"
_ATTEMPT_OF_TAGS = "substring(m.tags::text FROM 'attempt_id:([0-9]{1,4})')::int"
_SAME_RUN = "m.flow_id = r.flow_id AND m.run_number = r.run_number"

# --- runs -------------------------------------------------------------------------------------

_RUN_STATE = f"""
LEFT JOIN LATERAL (
  SELECT m.ts_epoch, {_OK} AS ok FROM metadata_v3 m
  WHERE {_SAME_RUN} AND m.step_name = 'end' AND m.field_name = 'attempt_ok'
  ORDER BY m.ts_epoch DESC, m.id DESC LIMIT 1) e ON true
LEFT JOIN LATERAL (
  SELECT max(m.ts_epoch) AS ts FROM metadata_v3 m
  WHERE {_SAME_RUN} AND m.step_name = 'end' AND m.field_name = 'attempt') ea ON true
CROSS JOIN LATERAL (SELECT
  e.ts_epoch IS NOT NULL AND (ea.ts IS NULL OR ea.ts <= e.ts_epoch) AS ended,
  r.last_heartbeat_ts IS NOT NULL AND {NOW_S} - r.last_heartbeat_ts > {RUN_LOST_S} AS lost,
  r.last_heartbeat_ts IS NULL AS silent) h
-- Only for a run that has not ended: the latest verdict that failed a task for good.
LEFT JOIN LATERAL (
  SELECT max(m.ts_epoch) AS ts FROM metadata_v3 m
  WHERE NOT h.ended AND {_SAME_RUN} AND m.field_name = 'attempt_ok' AND {_FAILED}
    AND NOT EXISTS (SELECT 1 FROM metadata_v3 n WHERE n.flow_id = m.flow_id AND n.run_number = m.run_number
      AND n.step_name = m.step_name AND n.task_id = m.task_id AND n.field_name = 'attempt'
      AND n.ts_epoch > m.ts_epoch)) f ON true
CROSS JOIN LATERAL (SELECT CASE
  WHEN h.ended AND e.ok THEN 'completed'
  WHEN h.ended THEN 'failed'
  WHEN f.ts IS NOT NULL AND (h.lost OR h.silent) THEN 'failed'
  WHEN h.lost THEN 'failed'
  WHEN h.silent AND {NOW_MS} - r.ts_epoch > {DAY_MS} THEN 'failed'
  ELSE 'running' END AS status) s
CROSS JOIN LATERAL (SELECT CASE
  WHEN h.ended THEN greatest(e.ts_epoch, r.ts_epoch)
  WHEN s.status = 'failed' THEN greatest(r.ts_epoch, f.ts, r.last_heartbeat_ts * 1000)
  END AS finished_at) fin
"""

RUN_COLUMNS = f"""r.flow_id, r.run_number, r.run_id, r.user_name,
  CASE WHEN r.system_tags ? ('user:' || r.user_name) THEN r.user_name END AS "user",
  coalesce(r.run_id, r.run_number::text) AS run, s.status, r.ts_epoch, fin.finished_at,
  greatest(0, coalesce(fin.finished_at, {NOW_MS}) - r.ts_epoch) AS duration,
  r.last_heartbeat_ts, coalesce(r.tags, '[]'::jsonb) AS tags, coalesce(r.system_tags, '[]'::jsonb) AS system_tags"""

RUN_FIELDS = Columns(
    kinds={"flow_id": "text", "run_number": "int", "run_id": "text", "user_name": "text", "user": "text",
           "run": "text", "status": "text", "ts_epoch": "int", "finished_at": "int", "duration": "int",
           "last_heartbeat_ts": "int"},
    key=("ts_epoch", "flow_id", "run_number"),
    groups=("flow_id", "user"),
)


def run_rows(where: str) -> str:
    return f"SELECT {RUN_COLUMNS} FROM runs_v3 r {_RUN_STATE} WHERE {where}"


ALL_RUNS = run_rows("true")
FLOW_RUNS = run_rows("r.flow_id = $1")
ONE_RUN = Keyed(run_rows("r.flow_id = $1 AND RUN(r)"))

# --- steps ------------------------------------------------------------------------------------

_STEP_END = """
LEFT JOIN LATERAL (
  SELECT max(m.ts_epoch) AS ts FROM metadata_v3 m
  WHERE m.flow_id = s.flow_id AND m.run_number = s.run_number AND m.step_name = s.step_name
    AND m.field_name IN ('attempt_ok', 'attempt-done')) done ON true
"""
STEP_ROWS = Keyed(f"""SELECT s.flow_id, s.run_number, s.run_id, s.step_name,
  s.user_name, s.ts_epoch, CASE WHEN done.ts IS NOT NULL THEN greatest(done.ts, s.ts_epoch) END AS finished_at,
  greatest(0, coalesce(done.ts, {NOW_MS}) - s.ts_epoch) AS duration,
  coalesce(r.tags, '[]'::jsonb) AS tags, coalesce(r.system_tags, '[]'::jsonb) AS system_tags
FROM steps_v3 s JOIN runs_v3 r ON r.flow_id = s.flow_id AND r.run_number = s.run_number {_STEP_END}
WHERE s.flow_id = $1 AND RUN(s)""")

STEP_FIELDS = Columns(
    kinds={"flow_id": "text", "run_number": "int", "run_id": "text", "step_name": "text", "user_name": "text",
           "ts_epoch": "int", "finished_at": "int", "duration": "int"},
    key=("ts_epoch", "step_name"),
)

# --- tasks: one row per attempt ---------------------------------------------------------------

# Every attempt a task has a trace of: its start, its end, its verdict, its _task_ok artifact.
# One read of the metadata for the three fields (sql/004_ui_indexes.sql holds just those rows).
_ATTEMPT_EVENTS = f"""
  SELECT m.task_id,
         CASE WHEN m.field_name = 'attempt_ok' THEN {_ATTEMPT_OF_TAGS} ELSE {_ATTEMPT_OF_VALUE} END AS attempt_id,
         CASE WHEN m.field_name = 'attempt' THEN m.ts_epoch END AS started_at,
         CASE WHEN m.field_name = 'attempt-done' THEN m.ts_epoch END AS done_at,
         CASE WHEN m.field_name = 'attempt_ok' THEN m.ts_epoch END AS verdict_at,
         CASE WHEN m.field_name = 'attempt_ok' THEN {_OK} END AS ok
  FROM metadata_v3 m WHERE m.flow_id = $1 AND RUN(m) AND STEPS(m)
    AND m.field_name IN ('attempt', 'attempt-done', 'attempt_ok')
  UNION ALL
  SELECT a.task_id, a.attempt_id, NULL, a.ts_epoch, NULL, NULL
  FROM artifact_v3 a WHERE a.flow_id = $1 AND RUN(a) AND STEPS(a) AND a.name = '_task_ok'
"""

_TASK_ROWS = f"""
WITH t AS (SELECT t.flow_id, t.run_number, t.run_id, t.step_name, t.task_id, t.task_name, t.user_name, t.ts_epoch,
    t.last_heartbeat_ts, rh.last_heartbeat_ts AS run_heartbeat_ts FROM tasks_v3 t
  LEFT JOIN runs_v3 rh ON rh.flow_id = t.flow_id AND rh.run_number = t.run_number
  WHERE t.flow_id = $1 AND RUN(t) AND STEPS(t) AND TASKS(t)),
events AS ({_ATTEMPT_EVENTS}),
attempts AS (
  SELECT e.task_id, e.attempt_id, min(e.started_at) AS started_at, max(e.done_at) AS done_at,
         max(e.verdict_at) AS verdict_at, bool_or(e.ok) AS ok
  FROM events e WHERE e.attempt_id IS NOT NULL AND e.task_id IN (SELECT task_id FROM t)
  GROUP BY e.task_id, e.attempt_id),
rows AS (
  SELECT t.*, coalesce(a.attempt_id, 0) AS attempt, a.started_at AS attempt_started, a.done_at, a.verdict_at, a.ok,
         lead(a.started_at) OVER (PARTITION BY t.task_id ORDER BY a.attempt_id) AS next_started
  FROM t LEFT JOIN attempts a ON a.task_id = t.task_id),
judged AS (
  SELECT rows.*, CASE
    WHEN rows.ok IS TRUE THEN 'completed'
    WHEN rows.ok IS FALSE THEN 'failed'
    WHEN coalesce(rows.done_at, rows.verdict_at) IS NOT NULL THEN
      CASE WHEN rows.step_name LIKE '\\_%' THEN 'completed' ELSE 'unknown' END
    WHEN rows.next_started IS NOT NULL THEN 'failed'
    WHEN rows.last_heartbeat_ts IS NOT NULL AND {NOW_S} - rows.last_heartbeat_ts > {TASK_LOST_S} THEN 'failed'
    WHEN rows.last_heartbeat_ts IS NOT NULL AND {NOW_S} - rows.last_heartbeat_ts > {RUN_LOST_S}
      AND {NOW_S} - coalesce(rows.run_heartbeat_ts, 0) > {RUN_LOST_S} THEN 'failed'
    WHEN rows.last_heartbeat_ts IS NULL AND {NOW_MS} - coalesce(rows.attempt_started, rows.ts_epoch) > {DAY_MS}
      THEN 'failed'
    WHEN rows.attempt_started IS NOT NULL THEN 'running'
    ELSE 'pending' END AS status,
    coalesce(rows.attempt_started, rows.ts_epoch) AS started
  FROM rows),
timed AS (
  SELECT judged.*, CASE WHEN judged.status IN ('running', 'pending') THEN NULL ELSE greatest(judged.started,
    coalesce(judged.verdict_at, judged.done_at, judged.next_started, judged.last_heartbeat_ts * 1000, judged.started))
    END AS finished
  FROM judged)
SELECT x.flow_id, x.run_number, x.run_id, x.step_name, x.task_id,
  x.task_name, x.user_name, x.status, x.ts_epoch, x.started AS started_at, x.finished AS finished_at,
  CASE WHEN x.status = 'pending' THEN NULL ELSE greatest(0, coalesce(x.finished, {NOW_MS}) - x.started) END AS duration,
  x.attempt AS attempt_id, coalesce(r.tags, '[]'::jsonb) AS tags, coalesce(r.system_tags, '[]'::jsonb) AS system_tags,
  x.last_heartbeat_ts
FROM timed x JOIN runs_v3 r ON r.flow_id = x.flow_id AND r.run_number = x.run_number
"""


def _tasks(steps: str, tasks: str) -> Keyed:
    text = _TASK_ROWS
    for alias in ("m", "a", "t"):
        text = text.replace(f"STEPS({alias})", steps.format(a=alias)).replace(f"TASKS({alias})", tasks.format(a=alias))
    return Keyed(text)


RUN_TASKS = _tasks("true", "true")
STEP_TASKS = _tasks("{a}.step_name = $3", "true")
ONE_TASK = _tasks("{a}.step_name = $3", "TASK({a})")

TASK_FIELDS = Columns(
    kinds={"flow_id": "text", "run_number": "int", "run_id": "text", "step_name": "text", "task_id": "int",
           "task_name": "text", "user_name": "text", "status": "text", "ts_epoch": "int", "started_at": "int",
           "finished_at": "int", "duration": "int", "attempt_id": "int", "last_heartbeat_ts": "int"},
    key=("task_id", "attempt_id"),
)

# --- metadata ---------------------------------------------------------------------------------

METADATA_COLUMNS = f"""m.id, m.flow_id, m.run_number, m.run_id, m.step_name,
  m.task_id, m.task_name, {_ATTEMPT_OF_TAGS} AS attempt_id, m.field_name, m.value, m.type, m.user_name,
  m.ts_epoch, coalesce(m.tags, '[]'::jsonb) AS tags, coalesce(m.system_tags, '[]'::jsonb) AS system_tags"""

RUN_METADATA = Keyed(f"SELECT {METADATA_COLUMNS} FROM metadata_v3 m WHERE m.flow_id = $1 AND RUN(m)")
TASK_METADATA = Keyed(
    f"SELECT {METADATA_COLUMNS} FROM metadata_v3 m WHERE m.flow_id = $1 AND RUN(m) AND m.step_name = $3 AND TASK(m)"
)
METADATA_FIELDS = Columns(
    kinds={"id": "int", "flow_id": "text", "run_number": "int", "run_id": "text", "step_name": "text",
           "task_id": "int", "task_name": "text", "attempt_id": "int", "field_name": "text", "value": "text",
           "type": "text", "user_name": "text", "ts_epoch": "int"},
    key=("ts_epoch", "id"),
)

# The datastore root a task attempt wrote to (ds-root metadata of that attempt, else any).
TASK_DS_ROOT = Keyed("""SELECT m.value FROM metadata_v3 m
WHERE m.flow_id = $1 AND RUN(m) AND m.step_name = $3 AND TASK(m) AND m.field_name = 'ds-root'
ORDER BY (m.tags ? ('attempt_id:' || ($5::int)::text)) DESC, m.ts_epoch DESC LIMIT 1""")

# --- artifacts --------------------------------------------------------------------------------

ARTIFACT_COLUMNS = """a.flow_id, a.run_number, a.run_id, a.step_name,
  a.task_id, a.task_name, a.name, a.location, a.ds_type, a.sha, a.type, a.content_type, a.user_name,
  a.attempt_id, a.ts_epoch, coalesce(r.tags, '[]'::jsonb) AS tags, coalesce(r.system_tags, '[]'::jsonb) AS system_tags"""
_ARTIFACTS_FROM = " FROM artifact_v3 a JOIN runs_v3 r ON r.flow_id = a.flow_id AND r.run_number = a.run_number"

RUN_ARTIFACTS = Keyed(f"SELECT {ARTIFACT_COLUMNS}{_ARTIFACTS_FROM} WHERE a.flow_id = $1 AND RUN(a)")
TASK_ARTIFACTS = Keyed(
    f"SELECT {ARTIFACT_COLUMNS}{_ARTIFACTS_FROM} WHERE a.flow_id = $1 AND RUN(a) AND a.step_name = $3 AND TASK(a)"
)
ARTIFACT_FIELDS = Columns(
    kinds={"flow_id": "text", "run_number": "int", "run_id": "text", "step_name": "text", "task_id": "int",
           "task_name": "text", "name": "text", "location": "text", "ds_type": "text", "sha": "text", "type": "text",
           "content_type": "text", "user_name": "text", "attempt_id": "int", "ts_epoch": "int"},
    key=("attempt_id", "name"),
)

# The run's parameters and graph: artifacts of its `_parameters` task (latest attempt).
PARAMETER_ARTIFACTS = Keyed("""SELECT a.name, a.location, a.sha, a.ds_type FROM artifact_v3 a
WHERE a.flow_id = $1 AND RUN(a) AND a.step_name = '_parameters'
  AND a.attempt_id = (SELECT max(b.attempt_id) FROM artifact_v3 b WHERE b.flow_id = a.flow_id
    AND b.run_number = a.run_number AND b.step_name = a.step_name AND b.task_id = a.task_id)
ORDER BY a.task_id DESC, a.name""")

# Search (`search.py`): a run's artifacts of one name ($2 run, $3 name), every attempt; its foreach
# stacks. `task_id` is the task's pathspec id, a string: the UI compares it with task names and ids as text.
SEARCH_ARTIFACTS = Keyed("""SELECT a.flow_id, a.run_number, a.step_name, coalesce(a.task_name, a.task_id::text) AS task_id,
  a.location, a.sha, a.ds_type
FROM artifact_v3 a WHERE a.flow_id = $1 AND RUN(a) AND a.name = $3 ORDER BY a.step_name, a.task_id, a.attempt_id""")
SEARCH_FOREACH_STACKS = Keyed("""SELECT m.flow_id, m.run_number, m.step_name, coalesce(m.task_name, m.task_id::text) AS task_id, m.value
FROM metadata_v3 m WHERE m.flow_id = $1 AND RUN(m) AND m.field_name = 'foreach-stack' ORDER BY m.step_name, m.task_id""")

RUN_EXISTS = Keyed("SELECT r.run_number FROM runs_v3 r WHERE r.flow_id = $1 AND RUN(r)")
TASK_EXISTS = Keyed("""SELECT t.task_id, coalesce(t.run_id, t.run_number::text), coalesce(t.task_name, t.task_id::text)
FROM tasks_v3 t WHERE TASK_ROW(t)""")

# --- autocomplete -----------------------------------------------------------------------------

AUTOCOMPLETE_FLOWS = "SELECT f.flow_id AS value, f.flow_id FROM flows_v3 f"
AUTOCOMPLETE_RUNS = "SELECT coalesce(r.run_id, r.run_number::text) AS value, coalesce(r.run_id, r.run_number::text) AS run FROM runs_v3 r WHERE r.flow_id = $1"
AUTOCOMPLETE_STEPS = Keyed("SELECT s.step_name AS value, s.step_name FROM steps_v3 s WHERE s.flow_id = $1 AND RUN(s)")
AUTOCOMPLETE_ARTIFACTS = Keyed("SELECT a.name AS value, a.name FROM artifact_v3 a WHERE a.flow_id = $1 AND RUN(a)")
AUTOCOMPLETE_TAGS = (
    "SELECT tag AS value, tag FROM runs_v3 r,"
    " jsonb_array_elements_text(coalesce(r.tags, '[]'::jsonb) || coalesce(r.system_tags, '[]'::jsonb)) tag"
)
# The latest attempt a task started (0 when none is recorded).
LATEST_ATTEMPT = Keyed(f"""SELECT coalesce(max({_ATTEMPT_OF_VALUE}), 0) FROM metadata_v3 m
WHERE m.flow_id = $1 AND RUN(m) AND m.step_name = $3 AND TASK(m) AND m.field_name = 'attempt'""")


# --- wrappers ---------------------------------------------------------------------------------

def listing(rows: str, query: ListQuery) -> str:
    """(JSON list text, number of rows or groups on the page) for a page of `rows`."""
    where = " AND ".join(query.where) or "true"
    if query.group is None:
        return (
            f"SELECT coalesce(json_agg(T ORDER BY {query.order}), '[]'::json)::text, count(*) FROM ("
            f"SELECT * FROM ({rows}) T WHERE {where} ORDER BY {query.order}"
            f" LIMIT {query.limit} OFFSET {query.offset}) T"
        )
    group = f'T."{query.group}"'
    ranked = (
        f"SELECT T.*, dense_rank() OVER (ORDER BY {group} ASC NULLS LAST) AS _group_rank,"
        f" row_number() OVER (PARTITION BY {group} ORDER BY {query.order}) AS _group_row"
        f" FROM ({rows}) T WHERE {where}"
    )
    return (
        f"SELECT coalesce(json_agg(to_jsonb(T) - '_group_rank' - '_group_row'"
        f" ORDER BY T._group_rank, {query.order}), '[]'::json)::text, count(DISTINCT T._group_rank) FROM ({ranked}) T"
        f" WHERE T._group_rank > {query.offset} AND T._group_rank <= {query.offset + query.limit}"
        f" AND T._group_row <= {query.group_limit}"
    )


def values_listing(rows: str, query: ListQuery) -> str:
    """A page of plain strings (autocomplete): `rows` has one column, `value`."""
    where = " AND ".join(query.where) or "true"
    return (
        "SELECT coalesce(json_agg(T.value ORDER BY T.value), '[]'::json)::text, count(*) FROM ("
        f"SELECT DISTINCT T.value FROM ({rows}) T WHERE {where} ORDER BY T.value"
        f" LIMIT {query.limit} OFFSET {query.offset}) T"
    )


def single(rows: str) -> str:
    return f"SELECT row_to_json(T)::text FROM ({rows}) T LIMIT 1"
