"""Least-privilege ClickHouse roles and users for server mode (``CLICKHOUSE_URL``).

:func:`grants_sql` writes the SQL an operator runs once (with a user allowed to manage access)
on the ClickHouse server:

- role ``causelog_writer`` (the worker): ``SELECT`` and ``INSERT`` on the causelog database,
  ``CREATE DATABASE`` on it (the worker's ``CREATE DATABASE IF NOT EXISTS``), and exactly the DDL
  its migrations need, derived from ``schemas/clickhouse`` by :func:`migration_privileges`:
  ``CREATE TABLE``, ``CREATE VIEW`` (materialized views too) and *additive* ``ALTER``s only
  (``ADD COLUMN``, ``ADD INDEX``...). A migration that needs anything else (``DROP``,
  ``ALTER ... DELETE``, ``MODIFY COLUMN``...) makes :func:`migration_privileges` fail: such a
  migration is an operator's job, never the worker's.
  ``SHOW TABLES``/``SHOW COLUMNS`` (clickhouse-connect's ``DESCRIBE`` before an insert) come
  with any other privilege on a table and need no grant.
- role ``causelog_reader`` (the API, ``causelog sql``, dashboards): ``SELECT`` on the causelog
  database and nothing else, under the settings profile ``causelog_reader_profile``:
  ``readonly = 1`` (no write, no DDL, no ``SET``, no table function) with fixed ceilings on
  execution time, rows and bytes read and returned, and memory. The ceilings are
  ``CHANGEABLE_IN_READONLY`` with a ``MAX``, so the API may lower them per query but nobody can
  raise them.
- neither role gets ``ALTER`` (beyond the additive ones), ``ALTER DELETE``/``UPDATE``, ``DROP``,
  ``TRUNCATE``, ``OPTIMIZE``, ``SYSTEM``, ``KILL QUERY``, access management, or any source for
  table functions (``file``, ``url``, ``remote``, ``s3``...; ClickHouse's ``SOURCES`` and
  ``CREATE TEMPORARY TABLE``): those stay with the operator. Each role is first stripped of
  whatever it had (``REVOKE ALL``), so running the script again resets it to exactly this.
- one user per role with a new random password (``--writer-user``, ``--reader-user``): put each
  in the ``CLICKHOUSE_URL`` of the process that uses it.
- on a cluster (``CAUSELOG_CLICKHOUSE_CLUSTER``): the writer also gets ``CLUSTER`` (its migrations
  run ``ON CLUSTER``; ClickHouse requires that grant for any ON CLUSTER query by default), and the
  reader profile sets ``distributed_product_mode = 'global'``, which every causelog connection to
  a cluster sends (pipeline/store/cluster.py). Access entities are per server unless the servers
  share a replicated user directory: run the script on every node.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.errors import ConfigError, StoreError
from pipeline.store.cluster import split_actions
from pipeline.store.migrations import Migration, discover

__all__ = ["READER_LIMITS", "Grants", "grants_sql", "migration_privileges", "statements"]

#: The reader profile's ceilings: (setting, value, MAX). The API may ask for less, never more.
READER_LIMITS: tuple[tuple[str, int, int], ...] = (
    ("max_execution_time", 30, 60),
    ("max_result_rows", 10_000, 100_000),
    ("max_result_bytes", 100_000_000, 1_000_000_000),
    ("max_rows_to_read", 1_000_000_000, 1_000_000_000),
    ("max_bytes_to_read", 100_000_000_000, 100_000_000_000),
    ("max_memory_usage", 4_000_000_000, 4_000_000_000),
)
# ``ALTER TABLE`` actions a migration may run as the worker: they add, never remove or rewrite.
_ADDITIVE_ALTERS = {
    "ADD COLUMN": "ALTER ADD COLUMN",
    "ADD INDEX": "ALTER ADD INDEX",
    "ADD PROJECTION": "ALTER ADD PROJECTION",
    "ADD CONSTRAINT": "ALTER ADD CONSTRAINT",
    "MATERIALIZE INDEX": "ALTER MATERIALIZE INDEX",
    "MATERIALIZE PROJECTION": "ALTER MATERIALIZE PROJECTION",
    "COMMENT COLUMN": "ALTER COMMENT COLUMN",
}
_CREATE = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?P<kind>TABLE|MATERIALIZED\s+VIEW|VIEW)\b", re.I
)
# A backfill (INSERT ... SELECT) needs only what the writer already has (SELECT, INSERT).
_INSERT = re.compile(r"^INSERT\s+INTO\b", re.I)
_ALTER = re.compile(r"^ALTER\s+TABLE\s+\S+\s+(?P<actions>.*)$", re.I | re.S)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def migration_privileges(migrations: Iterable[Migration], database: str = "causelog") -> list[str]:
    """The DDL privileges the migrations' statements need, sorted; StoreError naming the
    migration and statement when one needs more than the worker may have."""
    needed: set[str] = set()
    for mig in migrations:
        for statement in mig.statements(database):
            needed.add(_privilege(mig, statement))
    return sorted(p for privs in needed for p in privs.split(", ") if p)


def _privilege(mig: Migration, statement: str) -> str:
    if m := _CREATE.match(statement):
        return "CREATE TABLE" if m.group("kind").upper() == "TABLE" else "CREATE VIEW"
    if _INSERT.match(statement):
        return ""
    if m := _ALTER.match(statement):
        found = []
        for action in split_actions(m.group("actions")):
            words = " ".join(action.upper().split()[:2])
            if words not in _ADDITIVE_ALTERS:
                raise StoreError(_refusal(mig, statement, f"ALTER ... {words}"))
            found.append(_ADDITIVE_ALTERS[words])
        return ", ".join(sorted(set(found)))
    raise StoreError(_refusal(mig, statement, statement.split()[0].upper()))


def _refusal(mig: Migration, statement: str, what: str) -> str:
    first = " ".join(statement.split())[:80]
    return (f"migration {mig.version:03d}_{mig.name}.sql needs {what} ({first!r}), which the worker's "
            "role never gets: run it as an operator, or make it additive")


@dataclass(frozen=True)
class Grants:
    """Who gets what (names are ClickHouse identifiers)."""

    database: str = "causelog"
    writer_user: str = "causelog_worker"
    reader_user: str = "causelog_api"
    writer_role: str = "causelog_writer"
    reader_role: str = "causelog_reader"
    reader_profile: str = "causelog_reader_profile"

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not _IDENT.fullmatch(value):
                raise ConfigError(f"{name.replace('_', '-')} {value!r} must be an identifier (letters, digits, '_')")
        if self.writer_user == self.reader_user:
            raise ConfigError(f"the writer and the reader must be two users, got {self.writer_user!r} twice")


def grants_sql(
    g: Grants,
    migrations: Iterable[Migration] | None = None,
    passwords: tuple[str, str] | None = None,
    cluster: str | None = None,
) -> str:
    """The SQL script (statements end with ``;`` at line end, comments say why); ``cluster``: the
    ClickHouse cluster of ``CAUSELOG_CLICKHOUSE_CLUSTER``, if any."""
    ddl = migration_privileges(discover() if migrations is None else migrations, g.database)
    writer_pw, reader_pw = passwords or (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    db = g.database
    limits = ",\n    ".join(f"{name} = {value} MAX {ceiling} CHANGEABLE_IN_READONLY"
                            for name, value, ceiling in READER_LIMITS)
    on_cluster: list[str] = []
    if cluster:
        limits += ",\n    distributed_product_mode = 'global' CHANGEABLE_IN_READONLY"
        on_cluster = [
            f"-- Cluster {cluster}: the migrations run ON CLUSTER. Run this script on every node of the cluster",
            "-- (users and roles live on each server unless they share a replicated user directory).",
            f"GRANT CLUSTER ON *.* TO {g.writer_role};",
        ]
    lines = [
        "-- causelog least-privilege roles and users (causelog store grants); run once as an operator",
        "-- (a user with access management) on the ClickHouse server. Running it again resets both roles.",
        "",
        "-- The worker: reads and inserts, creates its database and runs its migrations (additive DDL only).",
        f"CREATE ROLE IF NOT EXISTS {g.writer_role};",
        f"REVOKE ALL ON *.* FROM {g.writer_role};",
        f"GRANT CREATE DATABASE ON {db}.* TO {g.writer_role};",
        f"GRANT SELECT, INSERT ON {db}.* TO {g.writer_role};",
        f"GRANT {', '.join(ddl)} ON {db}.* TO {g.writer_role};",
        *on_cluster,
        "",
        "-- The API and every reader: SELECT on the causelog database only, read-only, bounded.",
        f"CREATE ROLE IF NOT EXISTS {g.reader_role};",
        f"REVOKE ALL ON *.* FROM {g.reader_role};",
        f"GRANT SELECT ON {db}.* TO {g.reader_role};",
        f"CREATE SETTINGS PROFILE OR REPLACE {g.reader_profile} SETTINGS",
        "    readonly = 1,",
        "    result_overflow_mode = 'break' CHANGEABLE_IN_READONLY,",
        f"    {limits}",
        f"    TO {g.reader_role};",
        "",
        "-- Users: new random passwords; put each in the CLICKHOUSE_URL of its process",
        f"-- (worker: http://{g.writer_user}:<password>@host:8123, API/CLI: http://{g.reader_user}:<password>@host:8123).",
        "-- Existing users keep their password (IF NOT EXISTS); change one with ALTER USER ... IDENTIFIED BY.",
        f"CREATE USER IF NOT EXISTS {g.writer_user} IDENTIFIED WITH sha256_password BY '{_quote(writer_pw)}'"
        f" DEFAULT DATABASE {db};",
        f"GRANT {g.writer_role} TO {g.writer_user};",
        f"ALTER USER {g.writer_user} DEFAULT ROLE {g.writer_role};",
        f"CREATE USER IF NOT EXISTS {g.reader_user} IDENTIFIED WITH sha256_password BY '{_quote(reader_pw)}'"
        f" DEFAULT DATABASE {db} SETTINGS PROFILE '{g.reader_profile}';",
        f"GRANT {g.reader_role} TO {g.reader_user};",
        f"ALTER USER {g.reader_user} DEFAULT ROLE {g.reader_role};",
        "",
        "-- Operators only (granted to no causelog role): ALTER beyond the additive ones, ALTER DELETE/UPDATE,",
        "-- DROP, TRUNCATE, OPTIMIZE, SYSTEM, KILL QUERY, access management, and table-function sources",
        "-- (SOURCES: file, url, remote, s3, ...; CREATE TEMPORARY TABLE).",
    ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def statements(script: str) -> list[str]:
    """The statements of a :func:`grants_sql` script, without comments and trailing ``;``."""
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]
