"""Statement normalisation: literals never survive, shape and trace context do."""

from __future__ import annotations

import pytest
from keyed_helpers import tag

from pipeline.sources import pgsql


@pytest.mark.parametrize(
    ("sql", "normalized"),
    [
        # strings, with every escape PostgreSQL knows
        ("SELECT * FROM t WHERE name = 'O''Brien'", "SELECT * FROM t WHERE name = ?"),
        ("SELECT E'it\\'s', 'plain\\' OR x = 'tail'", "SELECT ?, ? OR x = ?"),
        ("SELECT e'a\\\\' , 'b'", "SELECT ? , ?"),
        ("SELECT B'1010', X'1F', N'nat', U&'d\\0061t'", "SELECT ?, ?, ?, ?"),
        ("SELECT $$it's 'quoted'$$, $fn$ body; 'x' $fn$", "SELECT ?, ?"),
        (
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 42 $$ LANGUAGE sql",
            "CREATE FUNCTION f() RETURNS int AS ? LANGUAGE sql",
        ),
        ("SELECT 'multi\nline'", "SELECT ?"),
        ("UPDATE test SET col1='forêt & océan' WHERE col2 = 1;", "UPDATE test SET col1=? WHERE col2 = ?"),
        # numbers
        ("SELECT 1, 1.5, .5, 1e10, 2.5E-3, 0x1F, 0o17, 0b101, 1_000", "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?"),
        ("SELECT t1.col2, x2 FROM t1", "SELECT t1.col2, x2 FROM t1"),
        # negative numbers: unary minus folds into the literal, binary minus stays
        ("UPDATE a SET b = b + -4121 WHERE c = -1", "UPDATE a SET b = b + ? WHERE c = ?"),
        (
            "SELECT -5, (-2), f(-3), x=-4, a-5, a - 6, (a)-7, ARRAY[-1]",
            "SELECT ?, (?), f(?), x=?, a-?, a - ?, (a)-?, ARRAY[?]",
        ),
        ("SELECT 5 - 3", "SELECT ? - ?"),
        # booleans; NULL and identifiers stay
        ('SELECT true, FALSE, null, "TRUE" FROM t', 'SELECT ?, ?, null, "TRUE" FROM t'),
        # parameters stay
        ("SELECT * FROM t WHERE a = $1 AND b = $2", "SELECT * FROM t WHERE a = $1 AND b = $2"),
        # IN lists, arrays and repeated VALUES rows collapse
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (?)"),
        ("SELECT * FROM t WHERE id IN ($1, $2, $3)", "SELECT * FROM t WHERE id IN ($1)"),
        ("SELECT * FROM t WHERE id NOT IN ('a','b')", "SELECT * FROM t WHERE id NOT IN (?)"),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", "SELECT * FROM t WHERE id IN (SELECT id FROM u)"),
        ("SELECT * FROM t WHERE id = ANY(ARRAY[1, 2, 3])", "SELECT * FROM t WHERE id = ANY(ARRAY[?])"),
        ("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');", "INSERT INTO t VALUES (?, ?)"),
        ("INSERT INTO t VALUES (1, 'a'), (2, DEFAULT)", "INSERT INTO t VALUES (?, ?), (?, DEFAULT)"),
        # comments are removed; whitespace collapses; a trailing semicolon goes
        ("SELECT 1 -- the answer 'x'\n  FROM   t /* note 'y' */ ;", "SELECT ? FROM t"),
        ("SELECT /* outer /* nested 'z' */ still */ 1", "SELECT ?"),
        (
            "ALTER USER u encrypted /* c */PASSWORD\n\t/* c */\n    'md565cb1da342495ea6bb0418a6e5718c38' LOGIN",
            "ALTER USER u encrypted PASSWORD ? LOGIN",
        ),
        # cut-off texts hide everything after the opening quote
        ("SELECT * FROM t WHERE secret = 'abc", "SELECT * FROM t WHERE secret = ?"),
        ("SELECT $$never closed", "SELECT ?"),
        ("SELECT 1 /* never closed 'q'", "SELECT ?"),
        ('SELECT "never closed', "SELECT ?"),
        ("", ""),
        (";", ""),
    ],
)
def test_normalize(sql: str, normalized: str) -> None:
    assert pgsql.normalize(sql) == normalized


def test_normalize_is_idempotent_on_its_output() -> None:
    sql = "SELECT a, 'x' FROM t WHERE b IN (1, 2) AND c = -3 AND d = $1 -- note"
    once = pgsql.normalize(sql)
    assert once == "SELECT a, ? FROM t WHERE b IN (?) AND c = ? AND d = $1"
    assert pgsql.normalize(once) == once


def test_standard_conforming_strings_off() -> None:
    sql = "SELECT 'it\\'s' , x"
    assert pgsql.normalize(sql, standard_conforming_strings=False) == "SELECT ? , x"
    # with the default (on), the backslash is a plain character and the string ends early
    assert pgsql.normalize(sql) == "SELECT ?s?"


def test_sqlcommenter_keeps_key_names_and_yields_the_trace() -> None:
    sql = (
        "SELECT * FROM orders WHERE id = 7 "
        "/*action='checkout',controller='orders',db_driver='psycopg2',"
        "traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/"
    )
    st = pgsql.analyze(sql)
    assert st.normalized == "SELECT * FROM orders WHERE id = ? /*action,controller,db_driver,traceparent*/"
    assert st.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert st.span_id == "00f067aa0ba902b7"
    assert st.comment_keys == ("action", "controller", "db_driver", "traceparent")
    assert "checkout" not in st.normalized


def test_url_encoded_traceparent_and_keys() -> None:
    sql = "UPDATE t SET a = 1 /*route='%2Fapi%2Fv1',traceparent='00%2D4BF92F3577B34DA6A3CE929D0E0E4736%2D00F067AA0BA902B7%2D01'*/"
    st = pgsql.analyze(sql)
    assert st.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert st.normalized == "UPDATE t SET a = ? /*route,traceparent*/"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 /* traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' is mentioned */",
        "SELECT '/*traceparent=''00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01''*/'",
        "SELECT 1 /*traceparent='00-00000000000000000000000000000000-00f067aa0ba902b7-01'*/",
        "SELECT 1 /*traceparent='ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/",
        "SELECT 1 /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01'*/",
    ],
)
def test_no_trace_from_prose_literals_or_invalid_ids(sql: str) -> None:
    assert pgsql.analyze(sql).trace_id is None


def test_passwords_never_appear_and_are_scrubbed_before_hashing() -> None:
    secret = "FLPDxlnW2MLyIOgtRaCqyW35mT8naTqh3MXtNYFCjaVz101kO3daQtSNn8aDjSNc"
    sql = f"ALTER ROLE \"myapp\" WITH PASSWORD '{secret}'"
    st = pgsql.analyze(sql)
    assert secret not in st.normalized
    assert st.normalized == 'ALTER ROLE "myapp" WITH PASSWORD ?'
    assert st.password_scrubbed
    assert st.hash == tag(b'ALTER ROLE "myapp" WITH PASSWORD <REDACTED>')
    assert st.command == "ALTER ROLE" and st.statement_class == "ROLE"
    assert (st.object_kind, st.object_name) == ("role", "myapp")
    plain = pgsql.analyze("SELECT 1")
    assert plain.hash == tag(b"SELECT 1") and not plain.password_scrubbed


@pytest.mark.parametrize(
    ("sql", "command", "cls"),
    [
        ("select 1", "SELECT", "READ"),
        ("WITH x AS (SELECT 1) DELETE FROM t USING x", "DELETE", "WRITE"),
        ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM x", "SELECT", "READ"),
        ("insert into t values (1)", "INSERT", "WRITE"),
        ("COPY t FROM '/tmp/x'", "COPY FROM", "WRITE"),
        ("COPY t TO STDOUT", "COPY TO", "READ"),
        ("SELECT a INTO new_t FROM t", "SELECT INTO", "WRITE"),
        ("TRUNCATE t", "TRUNCATE", "WRITE"),
        ("create table t (id int)", "CREATE TABLE", "DDL"),
        ("CREATE UNIQUE INDEX i ON t (a)", "CREATE INDEX", "DDL"),
        (
            "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ select 1 $$ LANGUAGE sql",
            "CREATE FUNCTION",
            "DDL",
        ),
        ("CREATE MATERIALIZED VIEW v AS SELECT 1", "CREATE MATERIALIZED VIEW", "DDL"),
        ("DROP TABLE IF EXISTS t", "DROP TABLE", "DDL"),
        ("CREATE USER u", "CREATE ROLE", "ROLE"),
        ("ALTER GROUP g ADD USER u", "ALTER ROLE", "ROLE"),
        ("DROP ROLE r", "DROP ROLE", "ROLE"),
        ("GRANT SELECT ON t TO u", "GRANT", "ROLE"),
        ("REVOKE ALL ON t FROM u", "REVOKE", "ROLE"),
        ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO u", "ALTER DEFAULT PRIVILEGES", "ROLE"),
        ("SET ROLE admin", "SET ROLE", "ROLE"),
        ("SET LOCAL synchronous_commit TO local", "SET", "MISC"),
        ("begin", "BEGIN", "MISC"),
        ("END;", "COMMIT", "MISC"),
        ("CALL p()", "CALL", "FUNCTION"),
        ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM", "DDL"),
        ("explain (analyze) select 1", "EXPLAIN", "READ"),
        ("/* leading comment */ (SELECT 1)", "SELECT", "READ"),
        ("", "", "MISC"),
    ],
)
def test_commands_and_classes(sql: str, command: str, cls: str) -> None:
    st = pgsql.analyze(sql)
    assert (st.command, st.statement_class) == (command, cls)


@pytest.mark.parametrize(
    ("sql", "kind", "name", "grantees"),
    [
        ("INSERT INTO public.Orders (a) VALUES (1)", "table", "public.orders", ()),
        ('UPDATE ONLY "Mixed"."Case" SET a = 1', "table", "Mixed.Case", ()),
        ("DELETE FROM t WHERE a = 1", "table", "t", ()),
        ("WITH x AS (SELECT 1) DELETE FROM test WHERE col1 = x.id", "table", "test", ()),
        ("CREATE TABLE IF NOT EXISTS s.t (id int)", "table", "s.t", ()),
        ("CREATE INDEX idx ON s.t (a)", "table", "s.t", ()),
        ("DROP VIEW v", "view", "v", ()),
        ('CREATE USER "streaming_replica" REPLICATION', "role", "streaming_replica", ()),
        ("ALTER ROLE regress_user1 PassWord <REDACTED>", "role", "regress_user1", ()),
        (
            "GRANT SELECT, UPDATE\n   ON TABLE public.test2\n   TO regress_auditor",
            "table",
            "public.test2",
            ("regress_auditor",),
        ),
        ('GRANT SELECT ON t TO a, GROUP b, "C"', "table", "t", ("a", "b", "C")),
        (
            'GRANT EXECUTE ON FUNCTION pg_catalog.f(text) TO "streaming_replica"',
            "function",
            "pg_catalog.f",
            ("streaming_replica",),
        ),
        ("GRANT ALL ON SCHEMA public TO public", "schema", "public", ("public",)),
        ("REVOKE INSERT ON t FROM bob", "table", "t", ("bob",)),
        ("GRANT admin TO alice", "role", "admin", ("alice",)),
        ("SELECT 1", None, None, ()),
    ],
)
def test_main_object(sql: str, kind: str | None, name: str | None, grantees: tuple[str, ...]) -> None:
    st = pgsql.analyze(sql)
    assert (st.object_kind, st.object_name, st.grantees) == (kind, name, grantees)


def test_scrub_message() -> None:
    assert (
        pgsql.scrub_message('invalid input syntax for type integer: "abc"')
        == "invalid input syntax for type integer: ?"
    )
    assert pgsql.scrub_message("Key (id)=(42) already exists.") == "Key (id)=(?) already exists."
    assert pgsql.scrub_message("value 'secret' for t1 at 3.5") == "value ? for t1 at ?"


def test_parse_traceparent() -> None:
    assert pgsql.parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )
    assert pgsql.parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01") is None
    assert pgsql.parse_traceparent("garbage") is None


def test_mysql_lexical_rules() -> None:
    sql = "INSERT INTO `customers` (first_name, note) VALUES ('An\\'ne', \"say \\\"hi\\\"\") # trailing 'x'"
    st = pgsql.analyze(sql, mysql=True)
    assert st.normalized == "INSERT INTO `customers` (first_name, note) VALUES (?, ?)"
    assert (st.command, st.object_name) == ("INSERT", "customers")
    # the same text read as PostgreSQL keeps "..." as an identifier: MySQL mode is not the default
    assert '"say' in pgsql.normalize('SELECT "say"')
