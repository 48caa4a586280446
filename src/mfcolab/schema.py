"""Apply the bundled SQL (the `mfcolab.sql` package, top-level `sql/` in the repo) in order.

Each file runs in one transaction and is recorded in `mfcolab_schema_migrations`; a file
already recorded is skipped, so applying is idempotent. A file may name the upstream goose
versions it covers (`-- goose-versions: ...`); those are recorded in `goose_db_version`, the
table the upstream migration tooling reads, so it sees an up-to-date database.
The superuser applies the schema; `give_tables_to_service` then hands every table to the
role the metadata service connects as (`SERVICE_ROLE`), which owns them and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import psycopg2

from .errors import SchemaError

log = logging.getLogger(__name__)

GOOSE_MARK = "-- goose-versions:"
SERVICE_ROLE = "mfcolab_service"
_ROLE_LIMITS = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS mfcolab_schema_migrations (
    name       TEXT PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS goose_db_version (
    id         SERIAL PRIMARY KEY,
    version_id BIGINT NOT NULL,
    is_applied BOOLEAN NOT NULL,
    tstamp     TIMESTAMP DEFAULT now()
);
"""


@dataclass(frozen=True)
class SqlFile:
    name: str
    text: str

    @property
    def goose_versions(self) -> list[int]:
        for line in self.text.splitlines():
            if line.startswith(GOOSE_MARK):
                return [int(v) for v in line[len(GOOSE_MARK) :].split()]
        return []


def bundled_files() -> list[SqlFile]:
    folder = resources.files("mfcolab.sql")
    files = [SqlFile(entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")]
    return sorted(files, key=lambda f: f.name)


def apply(dsn: str) -> list[str]:
    """Apply every bundled file not yet recorded; return the names applied now."""
    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        raise SchemaError(f"cannot connect to Postgres to apply the schema: {exc}".strip(), "mfcolab status") from exc
    applied: list[str] = []
    try:
        with conn:
            with conn.cursor() as cur:
                # One schema change at a time, even if two processes start together.
                cur.execute("SELECT pg_advisory_xact_lock(727274)")
                cur.execute(_BOOKKEEPING)
                cur.execute("SELECT count(*) FROM goose_db_version")
                if cur.fetchone()[0] == 0:  # type: ignore[index]
                    cur.execute("INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, true)")
        for sql_file in bundled_files():
            if _apply_file(conn, sql_file):
                applied.append(sql_file.name)
    except psycopg2.Error as exc:
        raise SchemaError(f"applying the bundled schema failed: {exc}".strip(), "mfcolab logs postgres") from exc
    finally:
        conn.close()
    return applied


def _apply_file(conn: psycopg2.extensions.connection, sql_file: SqlFile) -> bool:
    with conn:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(727274)")
            cur.execute("SELECT 1 FROM mfcolab_schema_migrations WHERE name = %s", (sql_file.name,))
            if cur.fetchone():
                return False
            log.info("applying %s", sql_file.name)
            cur.execute(sql_file.text)
            for version in sql_file.goose_versions:
                cur.execute(
                    "INSERT INTO goose_db_version (version_id, is_applied)"
                    " SELECT %s, true WHERE NOT EXISTS (SELECT 1 FROM goose_db_version WHERE version_id = %s)",
                    (version, version),
                )
            cur.execute("INSERT INTO mfcolab_schema_migrations (name) VALUES (%s)", (sql_file.name,))
    return True


def give_tables_to_service(dsn: str, password: str) -> None:
    """Create (or reset) the service's role and make it the owner of every table and sequence in
    the public schema. It gets no other right: no superuser, no roles, no databases, no
    replication, so a flaw in the service cannot reach files, programs or other roles."""
    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        raise SchemaError(f"cannot connect to Postgres to set up the service's role: {exc}".strip(), "mfcolab status") from exc
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(727274)")
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SERVICE_ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(f"{verb} ROLE {SERVICE_ROLE} WITH {_ROLE_LIMITS} PASSWORD %s", (password,))
            cur.execute("SELECT relkind, relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                        " AND relkind IN ('r', 'p', 'S') AND relowner <> %s::regrole ORDER BY relkind DESC", (SERVICE_ROLE,))
            for kind, name in cur.fetchall():
                what = "SEQUENCE" if kind == "S" else "TABLE"
                cur.execute(f'ALTER {what} public."{name}" OWNER TO {SERVICE_ROLE}')
    except psycopg2.Error as exc:
        raise SchemaError(f"setting up the service's role failed: {exc}".strip(), "mfcolab logs postgres") from exc
    finally:
        conn.close()
