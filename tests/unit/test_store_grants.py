"""Least privilege in server mode (pipeline/store/grants.py, `causelog store grants`) and the same
split in embedded mode (Store.readonly).

chDB has no access management (CREATE ROLE/USER need a server), so the generated SQL is checked
with ClickHouse's own parser (``formatQuery``) and its catalogue of privileges and settings
(``system.privileges``, ``system.settings``) of the same engine version.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.errors import ConfigError, QueryError, StoreError
from pipeline.store import Store
from pipeline.store.grants import READER_LIMITS, Grants, grants_sql, migration_privileges, statements
from pipeline.store.migrations import Migration, discover

WRITER = {"CREATE DATABASE", "SELECT", "INSERT", "CREATE TABLE", "CREATE VIEW", "ALTER ADD COLUMN", "ALTER ADD INDEX"}
# what a later (additive) migration may add to the writer's grants, and nothing else
WRITER_MAY_GAIN = {"ALTER ADD PROJECTION", "ALTER ADD CONSTRAINT", "ALTER MATERIALIZE INDEX",
                   "ALTER MATERIALIZE PROJECTION", "ALTER COMMENT COLUMN"}
OPERATOR_ONLY = ("DROP", "TRUNCATE", "OPTIMIZE", "ALTER DELETE", "ALTER UPDATE", "ALTER DROP", "ALTER MODIFY",
                 "SYSTEM", "KILL", "SOURCES", "FILE", "URL", "REMOTE", "S3", "CREATE TEMPORARY TABLE",
                 "ACCESS MANAGEMENT", "CREATE USER", "ALL")


def _grants(script: str) -> dict[str, set[str]]:
    """role -> privileges GRANTed to it on the causelog database."""
    out: dict[str, set[str]] = {}
    for st in statements(script):
        if m := re.fullmatch(r"GRANT (?P<privs>.+) ON (?P<on>\S+) TO (?P<role>\w+)", st):
            assert m.group("on") == "causelog.*", st  # never *.* nor another database
            out.setdefault(m.group("role"), set()).update(p.strip() for p in m.group("privs").split(","))
    return out


def test_every_statement_parses_with_clickhouses_parser(store: Store) -> None:
    script = grants_sql(Grants(), passwords=("it's a \\ test", "p2"))
    found = statements(script)
    assert len(found) == 15
    for st in found:
        formatted = store.query("SELECT formatQuery({q:String})", {"q": st}).rows[0][0]
        assert formatted.split()[:2] == st.split()[:2], (st, formatted)


def test_the_writer_may_read_insert_and_migrate_the_reader_only_select(store: Store) -> None:
    script = grants_sql(Grants())
    granted = _grants(script)
    assert WRITER <= granted["causelog_writer"] <= WRITER | WRITER_MAY_GAIN
    assert granted["causelog_reader"] == {"SELECT"}
    known = {row[0] for row in store.query("SELECT privilege FROM system.privileges").rows}
    for privilege in WRITER | WRITER_MAY_GAIN:
        assert privilege in known, privilege
    for privileges in granted.values():
        for privilege in privileges:
            assert not privilege.startswith(OPERATOR_ONLY), privilege
    # each role starts from nothing, so running the script again cannot leave an old grant behind
    assert "REVOKE ALL ON *.* FROM causelog_writer" in statements(script)
    assert "REVOKE ALL ON *.* FROM causelog_reader" in statements(script)
    # users get their role by default, the reader its read-only profile
    assert "ALTER USER causelog_worker DEFAULT ROLE causelog_writer" in statements(script)
    assert "ALTER USER causelog_api DEFAULT ROLE causelog_reader" in statements(script)


def test_the_reader_profile_is_readonly_with_ceilings_nobody_can_raise(store: Store) -> None:
    (profile,) = [st for st in statements(grants_sql(Grants())) if st.startswith("CREATE SETTINGS PROFILE")]
    assert re.search(r"\breadonly = 1,", profile)
    assert profile.rstrip().endswith("TO causelog_reader")
    known = {row[0] for row in store.query("SELECT name FROM system.settings").rows}
    for name, value, ceiling in READER_LIMITS:
        assert name in known
        assert f"{name} = {value} MAX {ceiling} CHANGEABLE_IN_READONLY" in profile
        assert value <= ceiling
    assert {"max_execution_time", "max_result_rows", "max_rows_to_read", "max_memory_usage"} <= {
        n for n, _, _ in READER_LIMITS
    }


def test_the_writer_ddl_is_derived_from_the_migrations_and_only_additive(tmp_path: Path) -> None:
    ddl = set(migration_privileges(discover()))
    assert WRITER - {"CREATE DATABASE", "SELECT", "INSERT"} <= ddl <= WRITER | WRITER_MAY_GAIN

    def mig(sql: str) -> list[Migration]:
        return [Migration(9, "next", sql)]

    assert migration_privileges(mig(
        "ALTER TABLE {database}.events ADD COLUMN price Decimal(10, 2) DEFAULT 0, ADD INDEX i price TYPE minmax;"
    )) == ["ALTER ADD COLUMN", "ALTER ADD INDEX"]
    assert migration_privileges(mig("CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.mv TO t AS SELECT 1;")) == [
        "CREATE VIEW"
    ]
    for sql, what in [
        ("DROP TABLE {database}.events;", "DROP"),
        ("ALTER TABLE {database}.events DELETE WHERE 1;", "ALTER ... DELETE WHERE"),
        ("ALTER TABLE {database}.events MODIFY COLUMN x String;", "ALTER ... MODIFY COLUMN"),
        ("ALTER TABLE {database}.events ADD COLUMN y UInt8, DROP COLUMN x;", "ALTER ... DROP COLUMN"),
        ("TRUNCATE TABLE {database}.events;", "TRUNCATE"),
    ]:
        with pytest.raises(StoreError, match=r"migration 009_next\.sql needs " + re.escape(what)):
            migration_privileges(mig(sql))


def test_passwords_are_new_random_and_names_are_checked() -> None:
    first, second = grants_sql(Grants()), grants_sql(Grants())
    pw = re.compile(r"IDENTIFIED WITH sha256_password BY '([^']+)'")
    assert len(set(pw.findall(first))) == 2 and set(pw.findall(first)).isdisjoint(pw.findall(second))
    assert all(len(p) >= 32 for p in pw.findall(first))
    with pytest.raises(ConfigError, match="reader-user 'api; DROP TABLE x' must be an identifier"):
        Grants(reader_user="api; DROP TABLE x")
    with pytest.raises(ConfigError, match="two users"):
        Grants(writer_user="u", reader_user="u")


def test_cli_prints_the_script_for_the_configured_database(tmp_path: Path) -> None:
    env = {"CAUSELOG_HOME": str(tmp_path), "CAUSELOG_DATABASE": "audit"}
    done = CliRunner().invoke(cli, ["store", "grants", "--reader-user", "grafana"], env=env)
    assert done.exit_code == 0, done.output
    assert "GRANT SELECT ON audit.* TO causelog_reader;" in done.output
    assert "CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH" in done.output
    bad = CliRunner().invoke(cli, ["store", "grants", "--database", "a-b"], env=env)
    assert bad.exit_code == 2 and "database 'a-b' must be an identifier" in bad.output


# -- the same split in embedded mode ------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES (99, 'x', 'y')",
        "ALTER TABLE {db}.events ADD COLUMN evil UInt8",
        "ALTER TABLE {db}.events DELETE WHERE 1",
        "DROP TABLE {db}.events",
        "TRUNCATE TABLE {db}.events",
        "CREATE TABLE {db}.t (x UInt8) ENGINE = Memory",
        "OPTIMIZE TABLE {db}.events FINAL",
    ],
)
def test_embedded_user_queries_cannot_write_alter_or_drop(store: Store, sql: str) -> None:
    with pytest.raises(QueryError, match="query rejected"):
        store.readonly(sql.format(db=store.database))
    # nothing changed, and the worker's own handle still writes
    assert store.query(f"SELECT count() FROM {store.database}.schema_migrations WHERE version = 99").rows == [[0]]
    assert "evil" not in {r[0] for r in store.query(f"DESCRIBE TABLE {store.database}.events").rows}
    store.insert("schema_migrations", [[98, "worker", "ok"]], ["version", "name", "checksum"])
    assert store.readonly(f"SELECT name FROM {store.database}.schema_migrations WHERE version = 98").rows == [["worker"]]
