"""SQL of the metadata service, one statement per request.

Postgres builds the JSON response itself (`json_build_object`/`json_agg`), so a read is one
round trip and the service passes text through without decoding it. Exposed ids follow the
upstream rule: the external id (`run_id`, `task_name`) when present, else the sequence number.
Steps, tasks and artifacts carry the tags of their run (a join on runs_v3); metadata rows keep
their own tags, because the client finds each row's attempt in them (`attempt_id:N`).

Positional parameters are fixed across statements: $1 flow_id, $2 run key, $3 step_name,
$4 task key. `RUN(x)` and `TASK(x)` in a template become the predicate on alias `x` for a
numeric or a string key; `Keyed.get` picks the variant. `TASK_ROW(t)` is the whole lookup of
one tasks_v3 row by its path.

Every statement is prepared once per connection and soon runs on a generic plan, planned from
whatever statistics a young, fast-growing database has. A task found by its numeric id must use
tasks_v3's primary key: the other indexes on (flow_id, run, step_name, ...) also match, and
with stale statistics (or task_name always NULL) the planner may take one of them and then
read every task of the step, per request. So for a numeric task the path check is wrapped in
`IS TRUE`, which no index can serve, and task_id is the only indexable condition left.
"""

from __future__ import annotations

import re

from .inputs import Key

_TOKEN = re.compile(r"(RUN|TASK_ROW|TASK)\((\w+)\)")


def _expand(template: str, run_numeric: bool, task_numeric: bool) -> str:
    def run(alias: str) -> str:
        return f"{alias}.run_number = $2" if run_numeric else f"{alias}.run_id = $2"

    def task(alias: str) -> str:
        return f"{alias}.task_id = $4" if task_numeric else f"{alias}.task_name = $4"

    def predicate(match: re.Match[str]) -> str:
        kind, alias = match.group(1), match.group(2)
        if kind == "RUN":
            return run(alias)
        if kind == "TASK":
            return task(alias)
        path = f"{alias}.flow_id = $1 AND {run(alias)} AND {alias}.step_name = $3"
        return f"{task(alias)} AND ({path}) IS TRUE" if task_numeric else f"{path} AND {task(alias)}"

    return _TOKEN.sub(predicate, template)


class Keyed:
    """The four variants of a statement, for numeric or string run and task keys."""

    def __init__(self, template: str) -> None:
        self._variants = {(rn, tn): _expand(template, rn, tn) for rn in (True, False) for tn in (True, False)}

    def get(self, run: Key | None, task: Key | None = None) -> str:
        return self._variants[(run.numeric if run is not None else True, task.numeric if task is not None else True)]


# --- JSON shapes (the upstream non-expanded serialization) -----------------------------------

def _exposed_run(alias: str) -> str:
    return f"coalesce(to_json({alias}.run_id), to_json({alias}.run_number))"


def _exposed_task(alias: str) -> str:
    return f"coalesce(to_json({alias}.task_name), to_json({alias}.task_id))"


FLOW_JSON = (
    "json_build_object('flow_id', f.flow_id, 'user_name', f.user_name, 'ts_epoch', f.ts_epoch,"
    " 'tags', f.tags, 'system_tags', f.system_tags)"
)

RUN_JSON = (
    f"json_build_object('flow_id', r.flow_id, 'run_number', {_exposed_run('r')}, 'user_name', r.user_name,"
    " 'user', CASE WHEN r.system_tags ? ('user:' || r.user_name) THEN r.user_name END,"
    " 'ts_epoch', r.ts_epoch, 'tags', r.tags, 'system_tags', r.system_tags, 'last_heartbeat_ts', r.last_heartbeat_ts)"
)

# Step rows always hold run_id (the run's external id, else the number as text): a string.
STEP_JSON = (
    "json_build_object('flow_id', s.flow_id, 'run_number', coalesce(s.run_id, s.run_number::text),"
    " 'step_name', s.step_name, 'user_name', s.user_name, 'ts_epoch', s.ts_epoch,"
    " 'tags', r.tags, 'system_tags', r.system_tags)"
)

TASK_JSON = (
    f"json_build_object('flow_id', t.flow_id, 'run_number', {_exposed_run('t')}, 'step_name', t.step_name,"
    f" 'task_id', {_exposed_task('t')}, 'user_name', t.user_name, 'ts_epoch', t.ts_epoch,"
    " 'tags', r.tags, 'system_tags', r.system_tags, 'last_heartbeat_ts', t.last_heartbeat_ts)"
)

METADATA_JSON = (
    f"json_build_object('id', m.id, 'flow_id', m.flow_id, 'run_number', {_exposed_run('m')},"
    f" 'step_name', m.step_name, 'task_id', {_exposed_task('m')}, 'field_name', m.field_name,"
    " 'value', m.value, 'type', m.type, 'user_name', m.user_name, 'ts_epoch', m.ts_epoch,"
    " 'tags', m.tags, 'system_tags', m.system_tags)"
)

ARTIFACT_JSON = (
    f"json_build_object('flow_id', a.flow_id, 'run_number', {_exposed_run('a')}, 'step_name', a.step_name,"
    f" 'task_id', {_exposed_task('a')}, 'name', a.name, 'location', a.location, 'ds_type', a.ds_type,"
    " 'sha', a.sha, 'type', a.type, 'content_type', a.content_type, 'user_name', a.user_name,"
    " 'attempt_id', a.attempt_id, 'ts_epoch', a.ts_epoch, 'tags', r.tags, 'system_tags', r.system_tags)"
)


def _list(shape: str, order: str) -> str:
    return f"SELECT coalesce(json_agg({shape} ORDER BY {order}), '[]'::json)::text"


_RUN_OF = "JOIN runs_v3 r ON r.flow_id = {a}.flow_id AND r.run_number = {a}.run_number"

# --- flows ------------------------------------------------------------------------------------

LIST_FLOWS = _list(FLOW_JSON, "f.ts_epoch DESC, f.flow_id") + " FROM flows_v3 f"
GET_FLOW = f"SELECT {FLOW_JSON}::text FROM flows_v3 f WHERE f.flow_id = $1"
CREATE_FLOW = (
    "INSERT INTO flows_v3 AS f (flow_id, user_name, tags, system_tags, ts_epoch)"
    f" VALUES ($1, $2, $3::jsonb, $4::jsonb, $5) RETURNING {FLOW_JSON}::text"
)

# --- runs -------------------------------------------------------------------------------------

LIST_RUNS = _list(RUN_JSON, "r.ts_epoch DESC, r.run_number DESC") + " FROM runs_v3 r WHERE r.flow_id = $1"
GET_RUN = Keyed(f"SELECT {RUN_JSON}::text FROM runs_v3 r WHERE r.flow_id = $1 AND RUN(r)")
CREATE_RUN = (
    "INSERT INTO runs_v3 AS r (flow_id, run_id, user_name, tags, system_tags, last_heartbeat_ts, ts_epoch)"
    f" VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7) RETURNING {RUN_JSON}::text"
)
RUN_HEARTBEAT = Keyed(
    "UPDATE runs_v3 r SET last_heartbeat_ts = $3 WHERE r.flow_id = $1 AND RUN(r)"
    " AND (r.last_heartbeat_ts IS NULL OR r.last_heartbeat_ts <= $3::bigint - $4::bigint)"
)
RUN_TAGS_FOR_UPDATE = Keyed(
    "SELECT r.run_number, r.tags::text, r.system_tags::text FROM runs_v3 r WHERE r.flow_id = $1 AND RUN(r)"
)
SET_RUN_TAGS = "UPDATE runs_v3 SET tags = $3::jsonb WHERE flow_id = $1 AND run_number = $2"

# --- steps ------------------------------------------------------------------------------------

LIST_STEPS = Keyed(
    _list(STEP_JSON, "s.ts_epoch, s.step_name")
    + " FROM steps_v3 s " + _RUN_OF.format(a="s") + " WHERE s.flow_id = $1 AND RUN(s)"
)
GET_STEP = Keyed(
    f"SELECT {STEP_JSON}::text FROM steps_v3 s " + _RUN_OF.format(a="s")
    + " WHERE s.flow_id = $1 AND RUN(s) AND s.step_name = $3"
)
# The run is looked up in the same statement: no row back means there is no such run.
CREATE_STEP = Keyed(
    "WITH ins AS ("
    " INSERT INTO steps_v3 (flow_id, run_number, run_id, step_name, user_name, tags, system_tags, ts_epoch)"
    " SELECT r.flow_id, r.run_number, coalesce(r.run_id, r.run_number::text), $3::text, $4::text, $5::jsonb, $6::jsonb, $7::bigint"
    " FROM runs_v3 r WHERE r.flow_id = $1 AND RUN(r)"
    " RETURNING *)"
    f" SELECT {STEP_JSON}::text FROM ins s " + _RUN_OF.format(a="s")
)

# --- tasks ------------------------------------------------------------------------------------

LIST_TASKS = Keyed(
    _list(TASK_JSON, "t.task_id")
    + " FROM tasks_v3 t " + _RUN_OF.format(a="t") + " WHERE t.flow_id = $1 AND RUN(t) AND t.step_name = $3"
)
GET_TASK = Keyed(
    f"SELECT {TASK_JSON}::text FROM tasks_v3 t " + _RUN_OF.format(a="t")
    + " WHERE TASK_ROW(t)"
)
# The run's and the task's ids as pathspecs name them (the string id, else the number).
TASK_PATHSPEC = Keyed(
    "SELECT coalesce(t.run_id, t.run_number::text), coalesce(t.task_name, t.task_id::text)"
    " FROM tasks_v3 t WHERE TASK_ROW(t)"
)
# One statement: find the step and its run, insert the task, and (for a heartbeat-capable
# client, $8 true) bump the run's heartbeat at most once per second. No row back: no step.
CREATE_TASK = Keyed(
    "WITH parent AS ("
    " SELECT s.flow_id, s.run_number, r.run_id, s.step_name, r.tags, r.system_tags"
    " FROM steps_v3 s " + _RUN_OF.format(a="s")
    + " WHERE s.flow_id = $1 AND RUN(s) AND s.step_name = $3),"
    " bump AS ("
    " UPDATE runs_v3 SET last_heartbeat_ts = $9::bigint"
    " WHERE $8::boolean AND flow_id = $1 AND run_number = (SELECT run_number FROM parent)"
    " AND (last_heartbeat_ts IS NULL OR last_heartbeat_ts < $9)),"
    " ins AS ("
    " INSERT INTO tasks_v3 (flow_id, run_number, run_id, step_name, task_name, user_name, tags, system_tags,"
    " last_heartbeat_ts, ts_epoch)"
    " SELECT p.flow_id, p.run_number, p.run_id, p.step_name, $4::text, $5::text, $6::jsonb, $7::jsonb,"
    " CASE WHEN $8::boolean THEN $9::bigint END, $10::bigint FROM parent p"
    " RETURNING *)"
    f" SELECT {TASK_JSON}::text FROM ins t, parent r"
)
TASK_HEARTBEAT = Keyed(
    "UPDATE tasks_v3 t SET last_heartbeat_ts = $5 WHERE TASK_ROW(t)"
    " AND (t.last_heartbeat_ts IS NULL OR t.last_heartbeat_ts <= $5::bigint - $6::bigint)"
)
FILTERED_TASKS = Keyed(
    "SELECT coalesce(json_agg(p.path ORDER BY p.task_id), '[]'::json)::text FROM ("
    " SELECT DISTINCT m.task_id, m.flow_id || '/' || coalesce(m.run_id, m.run_number::text) || '/'"
    " || m.step_name || '/' || coalesce(m.task_name, m.task_id::text) AS path"
    " FROM metadata_v3 m WHERE m.flow_id = $1 AND RUN(m) AND m.step_name = $3"
    " AND ($4::text IS NULL OR m.field_name = $4) AND ($5::text IS NULL OR regexp_match(m.value, $5) IS NOT NULL)"
    ") p"
)

# --- metadata ---------------------------------------------------------------------------------

# The task is resolved inside the statement; `found` = 0 tells the caller it does not exist.
_TASK_ROW = (
    "WITH t AS (SELECT t.flow_id, t.run_number, t.run_id, t.step_name, t.task_id, t.task_name"
    " FROM tasks_v3 t WHERE TASK_ROW(t)),"
)
# The list goes to Postgres as the request's own JSON text ($6), checked beforehand by the
# service: one parameter instead of one array per column.
_TAGS = "CASE WHEN jsonb_typeof(e->'{0}') = 'array' THEN e->'{0}' ELSE '[]'::jsonb END"

CREATE_METADATA = Keyed(
    _TASK_ROW
    + " ins AS (INSERT INTO metadata_v3 (flow_id, run_number, run_id, step_name, task_id, task_name,"
    " field_name, value, type, user_name, tags, system_tags, ts_epoch)"
    " SELECT t.flow_id, t.run_number, t.run_id, t.step_name, t.task_id, t.task_name,"
    " coalesce(e->>'field_name', ' '), coalesce(e->>'value', ' '), coalesce(e->>'type', ' '), e->>'user_name',"
    f" {_TAGS.format('tags')}, {_TAGS.format('system_tags')}, $5::bigint"
    " FROM t, jsonb_array_elements($6::jsonb) e"
    " WHERE jsonb_typeof(e->'value') IS DISTINCT FROM 'null'"
    " ON CONFLICT DO NOTHING RETURNING 1)"
    " SELECT (SELECT count(*) FROM t) AS found, (SELECT count(*) FROM ins) AS created"
)
TASK_METADATA = Keyed(
    _list(METADATA_JSON, "m.ts_epoch DESC, m.id DESC")
    + " FROM metadata_v3 m WHERE m.flow_id = $1 AND RUN(m) AND m.step_name = $3 AND TASK(m)"
)
RUN_METADATA = Keyed(
    _list(METADATA_JSON, "m.ts_epoch DESC, m.id DESC") + " FROM metadata_v3 m WHERE m.flow_id = $1 AND RUN(m)"
)

# --- artifacts --------------------------------------------------------------------------------

CREATE_ARTIFACTS = Keyed(
    _TASK_ROW
    + " ins AS (INSERT INTO artifact_v3 (flow_id, run_number, run_id, step_name, task_id, task_name,"
    " name, location, ds_type, sha, type, content_type, user_name, attempt_id, tags, system_tags, ts_epoch)"
    " SELECT t.flow_id, t.run_number, t.run_id, t.step_name, t.task_id, t.task_name,"
    " coalesce(e->>'name', ' '), coalesce(e->>'location', ' '), coalesce(e->>'ds_type', ' '),"
    " coalesce(e->>'sha', ' '), coalesce(e->>'type', ' '), coalesce(e->>'content_type', ' '), e->>'user_name',"
    " coalesce((e->>'attempt_id')::smallint, 0),"
    f" {_TAGS.format('tags')}, {_TAGS.format('system_tags')}, $5::bigint"
    " FROM t, jsonb_array_elements($6::jsonb) e"
    " ON CONFLICT DO NOTHING RETURNING 1)"
    " SELECT (SELECT count(*) FROM t) AS found, (SELECT count(*) FROM ins) AS created"
)

# The latest attempt of a task is the highest attempt_id among its artifacts.
_LATEST = (
    " AND a.attempt_id = (SELECT max(b.attempt_id) FROM artifact_v3 b WHERE b.flow_id = a.flow_id"
    " AND b.run_number = a.run_number AND b.step_name = a.step_name AND b.task_id = a.task_id)"
)
_ARTIFACTS_FROM = " FROM artifact_v3 a " + _RUN_OF.format(a="a")

TASK_ARTIFACTS = Keyed(
    _list(ARTIFACT_JSON, "a.name") + _ARTIFACTS_FROM
    + " WHERE a.flow_id = $1 AND RUN(a) AND a.step_name = $3 AND TASK(a)" + _LATEST
)
TASK_ATTEMPT_ARTIFACTS = Keyed(
    _list(ARTIFACT_JSON, "a.name") + _ARTIFACTS_FROM
    + " WHERE a.flow_id = $1 AND RUN(a) AND a.step_name = $3 AND TASK(a) AND a.attempt_id = $5"
)
STEP_ARTIFACTS = Keyed(
    _list(ARTIFACT_JSON, "a.task_id, a.name") + _ARTIFACTS_FROM
    + " WHERE a.flow_id = $1 AND RUN(a) AND a.step_name = $3" + _LATEST
)
RUN_ARTIFACTS = Keyed(
    _list(ARTIFACT_JSON, "a.step_name, a.task_id, a.name") + _ARTIFACTS_FROM
    + " WHERE a.flow_id = $1 AND RUN(a)" + _LATEST
)
# Upstream rule: the latest attempt is that of the artifact called "name" (every attempt
# writes it); without one, attempt 0.
GET_ARTIFACT = Keyed(
    f"SELECT {ARTIFACT_JSON}::text" + _ARTIFACTS_FROM
    + " WHERE a.flow_id = $1 AND RUN(a) AND a.step_name = $3 AND TASK(a) AND a.name = $5"
    " AND a.attempt_id = coalesce((SELECT max(b.attempt_id) FROM artifact_v3 b"
    " WHERE b.flow_id = $1 AND RUN(b) AND b.step_name = $3 AND TASK(b) AND b.name = 'name'), 0)"
)
GET_ARTIFACT_ATTEMPT = Keyed(
    f"SELECT {ARTIFACT_JSON}::text" + _ARTIFACTS_FROM
    + " WHERE a.flow_id = $1 AND RUN(a) AND a.step_name = $3 AND TASK(a) AND a.name = $5 AND a.attempt_id = $6"
)
