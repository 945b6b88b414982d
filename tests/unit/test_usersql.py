"""The user-SQL gate (pipeline/store/usersql.py): one allowed statement, lexed like ClickHouse."""

from __future__ import annotations

import pytest

from pipeline.errors import QueryError
from pipeline.store.usersql import check, normalize, sql_hash


@pytest.mark.parametrize(("sql", "sent"), [
    ("SELECT 1", "SELECT 1"),
    ("  select 1 ;  ", "  select 1"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("(SELECT 1) UNION ALL (SELECT 2)", "(SELECT 1) UNION ALL (SELECT 2)"),
    ("-- a comment\nSELECT 1", "-- a comment\nSELECT 1"),
    ("/* c */ SHOW TABLES", "/* c */ SHOW TABLES"),
    ("# hash comment\nDESCRIBE events", "# hash comment\nDESCRIBE events"),
    ("DESC events", "DESC events"),
    ("EXPLAIN SELECT 1", "EXPLAIN SELECT 1"),
    ("SELECT ';' AS semi, 'it''s', 'a\\';b'", "SELECT ';' AS semi, 'it''s', 'a\\';b'"),
    ("SELECT `a;b`, \"c;d\" FROM t -- ; DROP TABLE t", "SELECT `a;b`, \"c;d\" FROM t -- ; DROP TABLE t"),
    ("SELECT 1; -- trailing comment", "SELECT 1"),
])
def test_allowed_statements_pass(sql: str, sent: str) -> None:
    assert check(sql) == sent


@pytest.mark.parametrize(("sql", "reason"), [
    ("INSERT INTO t VALUES (1)", "only SELECT"),
    ("SET readonly = 0", "only SELECT"),
    ("USE system", "only SELECT"),
    ("KILL QUERY WHERE 1", "only SELECT"),
    ("SYSTEM SHUTDOWN", "only SELECT"),
    ("OPTIMIZE TABLE t", "only SELECT"),
    ("/* SELECT */ DROP TABLE t", "only SELECT"),
    ("SELECT 1; DROP TABLE t", "one statement"),
    ("SELECT 1;USE system", "one statement"),
    ("SELECT 'unterminated", "unterminated"),
    ("SELECT 1 /* open", "unterminated"),
    ("", "empty"),
    ("  -- only a comment", "empty"),
    ("'SELECT'", "only SELECT"),
])
def test_everything_else_is_refused_with_the_reason(sql: str, reason: str) -> None:
    with pytest.raises(QueryError, match="^query rejected: ") as info:
        check(sql)
    assert reason in str(info.value)


def test_normalize_drops_literals_and_keeps_shape() -> None:
    assert normalize("SELECT *  FROM events\nWHERE actor_id = 'erin@acme.io' AND n > 42 -- why") == \
        "SELECT * FROM events WHERE actor_id = ? AND n > ?"
    broken = "SELECT 'x"
    assert normalize(broken) == "unparsed:" + sql_hash(broken)


def test_sql_hash_is_stable_and_hides_the_text() -> None:
    assert sql_hash("SELECT 1") == sql_hash("SELECT 1") != sql_hash("SELECT 2")
    assert sql_hash("SELECT 'secret'").startswith("hmac-sha256:v1:") and "secret" not in sql_hash("SELECT 'secret'")
    # Keyed: a plain SHA-256 of the text (a dictionary attack) does not give it back.
    import hashlib

    assert hashlib.sha256(b"SELECT 'secret'").hexdigest()[:32] not in sql_hash("SELECT 'secret'")
