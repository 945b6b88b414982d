"""PostgreSQL log parsing (csvlog, jsonlog, stderr, Cloud SQL, pgaudit) and mapping to envelopes."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from pipeline.errors import DecodeError
from pipeline.model import Event, decode, encode
from pipeline.sources import debezium, postgres_log
from pipeline.sources.postgres_log import LogRecord

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SECRET = "s3cr3t-Pa55w0rd-never-stored"


def _events(records: list[LogRecord], server: str = "db1", stats: Counter[str] | None = None) -> list[Event]:
    out: list[Event] = []
    for record in records:
        for event in postgres_log.to_events(record, scope="acme", server=server, stats=stats):
            assert decode(encode(event)) == event
            out.append(event)
    return out


STDERR = f"""\
2024-05-01 10:00:00.100 UTC [4242] LOG:  connection received: host=10.0.0.5 port=51000
2024-05-01 10:00:00.120 UTC [4242] alice@shop LOG:  connection authorized: user=alice database=shop application_name=psql
2024-05-01 10:00:01.000 UTC [4242] alice@shop LOG:  statement: UPDATE orders SET total = 99.5, note = 'gift for Bob' WHERE id = 17 /*traceparent='00-{TRACE}-00f067aa0ba902b7-01'*/
2024-05-01 10:00:02.000 UTC [4242] alice@shop ERROR:  duplicate key value violates unique constraint "orders_pkey"
2024-05-01 10:00:02.000 UTC [4242] alice@shop DETAIL:  Key (id)=(17) already exists.
2024-05-01 10:00:02.000 UTC [4242] alice@shop STATEMENT:  INSERT INTO orders (id, note)
\tVALUES (17, 'second gift for Bob')
2024-05-01 10:00:03.000 UTC [4242] alice@shop LOG:  duration: 1.5 ms  statement: ALTER ROLE bob WITH PASSWORD '{SECRET}'
2024-05-01 10:00:04.000 UTC [77] LOG:  checkpoint complete: wrote 3 buffers (0.0%)
2024-05-01 10:00:05.000 UTC [4242] alice@shop LOG:  disconnection: session time: 0:00:04.900 user=alice database=shop host=10.0.0.5 port=51000
2024-05-01 10:00:06.000 UTC [4243] LOG:  connection received: host=10.0.0.6 port=51001
2024-05-01 10:00:06.010 UTC [4243] FATAL:  password authentication failed for user "mallory"
"""


def test_stderr_default_debian_prefix_end_to_end() -> None:
    stats: Counter[str] = Counter()
    records = list(postgres_log.parse_stderr(STDERR, stats=stats))
    assert stats["records"] == 9 and stats["continuation_lines"] == 3
    session = f"{int(datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC).timestamp()):x}.{4242:x}"
    # the checkpointer (pid 77) has no session; the session closes with its disconnection
    assert [r.session_id for r in records[:7]] == [session] * 5 + [None, session]
    assert [r.session_id_derived for r in records[:7]] == [True] * 5 + [False, True]
    error = records[3]
    assert error.severity == "ERROR" and error.detail == "Key (id)=(17) already exists."
    assert error.query == "INSERT INTO orders (id, note)\nVALUES (17, 'second gift for Bob')"
    assert (error.line, error.line_end) == (4, 7)

    ev_stats: Counter[str] = Counter()
    events = _events(records, stats=ev_stats)
    assert [e.type for e in events] == [
        "db.session.started",
        "db.write",
        "db.write",
        "access.db.alter_role",
        "db.session.ended",
        "db.session.started",
    ]
    assert ev_stats == {"events": 6, "unmapped": 3}  # 2x connection received, checkpoint
    started, update, failed_insert, alter, ended, bad_login = events
    key = f"session:postgres:db1:{session}"
    assert all(key in e.links for e in (started, update, failed_insert, alter, ended))
    assert f"trace:{TRACE}" in update.links
    assert update.outcome == "unknown" and failed_insert.outcome == "failure" and alter.outcome == "success"
    assert update.raw["statement"]["normalized"].startswith(
        "UPDATE orders SET total = ?, note = ? WHERE id = ?"
    )
    assert update.raw["message"].startswith("statement: UPDATE orders SET total = ?")
    assert (update.target.kind, update.target.id) == ("db.table", "db1/shop/orders")
    assert failed_insert.raw["message"] == "duplicate key value violates unique constraint ?"
    assert "detail_hash" in failed_insert.raw and "detail" not in failed_insert.raw
    assert (alter.target.kind, alter.target.id) == ("db.role", "db1/bob")
    assert alter.raw["statement"]["password_scrubbed"] is True
    # no `connection authenticated` line: the log shows no check of the role, only its claim
    assert started.actor.id == "postgres:db1:alice" and started.actor.assurance == "claimed"
    assert not started.actor.verified
    assert started.raw["application_name"] == "psql"
    assert bad_login.outcome == "failure" and bad_login.actor.id == "postgres:db1:mallory"
    assert bad_login.actor.assurance == "claimed" and not bad_login.actor.verified
    everything = b"".join(encode(e) for e in events).decode()
    for value in (SECRET, "gift for Bob", "99.5", "(17)"):
        assert value not in everything


def test_pgbadger_prefix_with_line_numbers() -> None:
    text = (
        "2017-09-06 08:41:42 UTC [36]: [253-1] user=postgres,db=postgres,app=pgbench,client=172.23.0.1 "
        "LOG:  duration: 0.168 ms  statement: INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        "VALUES (2, 1, 72639, -4897, CURRENT_TIMESTAMP);\n"
    )
    (record,) = postgres_log.parse_stderr(text)
    assert (record.pid, record.session_line, record.user, record.database) == (
        36,
        253,
        "postgres",
        "postgres",
    )
    assert (record.application_name, record.client) == ("pgbench", "172.23.0.1")
    (event,) = _events([record])
    assert event.raw["statement"]["normalized"] == (
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (?, ?, ?, ?, CURRENT_TIMESTAMP)"
    )
    assert event.outcome == "success" and event.raw["statement"]["duration_ms"] == 0.168


def test_session_and_transaction_from_prefix_escapes() -> None:
    prefix = "%m [%p] %c %x %q%u@%d "
    text = (
        "2024-05-01 10:00:01.000 UTC [4242] 66321a10.1092 731 app@shop LOG:  statement: DELETE FROM carts WHERE id = 3\n"
        "2024-05-01 10:00:02.000 UTC [4242] 66321a10.1092 0 app@shop LOG:  statement: COMMIT\n"
    )
    records = list(postgres_log.parse_stderr(text, prefix=prefix))
    assert [r.session_id for r in records] == ["66321a10.1092"] * 2
    assert [r.xid for r in records] == ["731", None]
    delete, commit = _events(records)
    assert delete.links == ("session:postgres:db1:66321a10.1092", "request:pgtx:db1:731")
    assert commit.links == ("session:postgres:db1:66321a10.1092",)


def test_session_start_escape_computes_the_server_session_id() -> None:
    text = "2024-05-01 10:00:01.000 UTC [4242] 2024-05-01 10:00:00 UTC app@shop LOG:  statement: SELECT 1\n"
    (record,) = postgres_log.parse_stderr(text, prefix="%m [%p] %s %q%u@%d ")
    assert record.session_id == f"{int(datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp()):x}.{4242:x}"
    assert not record.session_id_derived


def test_compile_prefix_padding_percent_and_q() -> None:
    regex = postgres_log.compile_prefix("%% %-8u|%a| %q%d ")
    m = regex.match("% alice   |my app| shop LOG:  hello")
    assert m and m.group("user") == "alice" and m.group("application_name") == "my app"
    assert m.group("database") == "shop" and m.group("message") == "hello"
    m = regex.match("% alice   |my app| LOG:  background")
    assert m and m.group("database") is None


def test_detects_the_prefix() -> None:
    stats: Counter[str] = Counter()
    text = (
        "2022-02-17 14:45:10.440 UTC [691] [queryid=1081270519976314062] postgres@so LOG:  statement: select 1;\n"
        "\n"
        "stray text before nothing\n"
    )
    (record,) = postgres_log.parse_stderr(text, stats=stats)
    assert (record.query_id, record.user, record.database) == ("1081270519976314062", "postgres", "so")
    assert stats == {"records": 1, "blank_lines": 1, "orphan_lines": 1}


CSV_26 = (
    '2024-05-01 12:00:00.000 CEST,"alice","shop",4242,"10.0.0.5:51000",66321a10.1092,5,"UPDATE",'
    '2024-05-01 11:59:00 CEST,3/12,731,LOG,00000,"duration: 2.000 ms  statement: UPDATE orders\n'
    '   SET note = \'multi\nline secret\'\n WHERE id = 1",,,,,,,,,"psql","client backend",,0\n'
    '2024-05-01 12:00:01.000 CEST,"alice","shop",4242,"10.0.0.5:51000",66321a10.1092,6,"idle",'
    '2024-05-01 11:59:00 CEST,3/13,0,LOG,00000,"disconnection: session time: 0:01:01.000 user=alice database=shop host=10.0.0.5 port=51000",,,,,,,,,"psql","client backend",,0\n'
)


def test_csvlog_multi_line_fields_positions_and_layouts() -> None:
    stats: Counter[str] = Counter()
    first, second = postgres_log.parse_csvlog(CSV_26, stats=stats)
    assert stats == {"records": 2, "continuation_lines": 3}
    assert (first.line, first.line_end, first.offset) == (1, 4, 0)
    assert second.line == 5 and second.offset == len(CSV_26.split("\n2024-05-01 12:00:01")[0].encode()) + 1
    assert first.time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)  # CEST = UTC+2
    assert (first.backend_type, first.query_id, first.xid) == ("client backend", None, "731")
    update, ended = _events([first, second])
    assert update.id == postgres_log.to_events(first, scope="other", server="db1")[0].id
    assert update.links == ("session:postgres:db1:66321a10.1092", "request:pgtx:db1:731")
    assert update.raw["statement"]["normalized"] == "UPDATE orders SET note = ? WHERE id = ?"
    assert "secret" not in encode(update).decode()
    assert ended.type == "db.session.ended" and ended.raw["session_duration"] == "0:01:01.000"
    # the 23-column layout of PostgreSQL <= 12 and a row of an unknown layout
    old = '2021-01-22 10:03:22.785 CET,"u","d",1486,"127.0.0.1:52306",6009c305.5ce,1,"SELECT",2021-01-21 19:08:05 CET,14/1,0,LOG,00000,"statement: SELECT 1",,,,,,,,,"app"\n'
    stats = Counter()
    (record,) = postgres_log.parse_csvlog(old + "a,b,c\n", stats=stats)
    assert record.application_name == "app" and record.backend_type is None
    assert stats == {"records": 1, "bad_column_count": 1, "continuation_lines": 0}


def test_jsonlog_pg15() -> None:
    line = json.dumps(
        {
            "timestamp": "2024-05-01 10:00:00.000 UTC",
            "user": "alice",
            "dbname": "shop",
            "pid": 4242,
            "remote_host": "10.0.0.5",
            "remote_port": 51000,
            "session_id": "66321a10.1092",
            "line_num": 3,
            "ps": "GRANT",
            "session_start": "2024-05-01 09:59:00 UTC",
            "vxid": "3/12",
            "txid": 900,
            "error_severity": "LOG",
            "message": "statement: GRANT SELECT ON orders TO reporting",
            "application_name": "psql",
            "backend_type": "client backend",
            "query_id": 0,
        }
    )
    stats: Counter[str] = Counter()
    (record,) = postgres_log.parse_jsonlog(
        line + '\n{"level": "info", "msg": "operator"}\nnot json\n', stats=stats
    )
    assert stats == {"records": 1, "not_a_log_record": 1, "bad_json": 1}
    assert (record.format, record.client, record.xid, record.query_id) == (
        "jsonlog",
        "10.0.0.5:51000",
        "900",
        None,
    )
    (event,) = _events([record])
    assert event.type == "access.db.grant" and event.subject == "to reporting"
    assert (event.target.kind, event.target.id) == ("db.table", "db1/shop/orders")
    assert "request:pgtx:db1:900" in event.links


def test_cloudsql_entries_and_continuations() -> None:
    def entry(text: str, ts: str) -> str:
        return json.dumps(
            {
                "insertId": "i-" + ts,
                "resource": {"type": "cloudsql_database", "labels": {"database_id": "proj:inst"}},
                "severity": "INFO",
                "textPayload": text,
                "timestamp": ts,
            }
        )

    text = "\n".join(
        [
            entry(
                "[202]: [1-1] db=[unknown],user=[unknown] LOG:  connection received: host=127.0.0.1 port=1",
                "2020-05-02T13:43:20.1Z",
            ),
            entry(
                "[202]: [2-1] db=test,user=app LOG:  connection authorized: user=app database=test",
                "2020-05-02T13:43:20.2Z",
            ),
            entry(
                '[202]: [3-1] db=test,user=app LOG:  automatic vacuum of table "t": index scans: 0',
                "2020-05-02T13:43:20.3Z",
            ),
            entry("\tpages: 0 removed, 1 remain", "2020-05-02T13:43:20.31Z"),
            entry(
                "[202]: [4-1] db=test,user=app LOG:  statement: SELECT * FROM t1 WHERE a = 'x'",
                "2020-05-02T13:43:20.4Z",
            ),
        ]
    )
    stats: Counter[str] = Counter()
    records = list(postgres_log.parse_cloudsql(text, stats=stats))
    assert stats == {"records": 4, "continuation_lines": 1}
    assert records[0].user is None and records[1].user == "app"
    assert records[2].message.endswith("\npages: 0 removed, 1 remain")
    assert records[3].extra["database_id"] == "proj:inst"
    started, select = _events(records)
    assert started.links == select.links and select.links[0].startswith("session:postgres:db1:")
    assert select.time == datetime(2020, 5, 2, 13, 43, 20, 400000, tzinfo=UTC)


def test_pgaudit_line_in_a_server_log() -> None:
    text = (
        "2024-05-01 10:00:00.000 UTC [4242] 66321a10.1092 admin@shop LOG:  AUDIT: SESSION,8,1,ROLE,GRANT,TABLE,,"
        '"GRANT SELECT, INSERT\n\t   ON orders\n\t   TO app_rw, app_ro",<not logged>\n'
        "2024-05-01 10:00:01.000 UTC [4242] 66321a10.1092 admin@shop LOG:  AUDIT: OBJECT,9,1,WRITE,INSERT,TABLE,"
        'public.orders,"INSERT INTO orders VALUES ($1, $2)","17,hunter2"\n'
    )
    grant, insert = _events(list(postgres_log.parse_stderr(text, prefix="%m [%p] %c %q%u@%d ")))
    assert grant.type == "access.db.grant" and grant.subject == "to app_rw, app_ro"
    assert (grant.target.kind, grant.target.id) == ("db.table", "db1/shop/orders")
    assert grant.raw["audit"]["class"] == "ROLE" and grant.raw["audit"]["parameter"] == "<not logged>"
    assert insert.type == "db.write" and insert.target.id == "db1/shop/public.orders"
    assert insert.raw["audit"]["parameter"] == "<redacted>"
    assert "hunter2" not in encode(insert).decode()
    assert grant.outcome == insert.outcome == "unknown"


def test_extended_protocol_phases_are_counted_not_emitted() -> None:
    record = LogRecord(
        format="csvlog",
        time=datetime(2024, 5, 1, tzinfo=UTC),
        message="duration: 0.5 ms  bind S_1: SELECT $1",
        severity="LOG",
        session_id="a.b",
        session_line=1,
    )
    stats: Counter[str] = Counter()
    assert postgres_log.to_events(record, scope="acme", server="db1", stats=stats) == []
    assert stats == {"extended_protocol_phase": 1}


def test_time_zones() -> None:
    assert postgres_log.parse_pg_time("2019-10-21 12:03:31.311 MSK") == datetime(
        2019, 10, 21, 9, 3, 31, 311000, tzinfo=UTC
    )
    assert postgres_log.parse_pg_time("2019-10-21 12:03:31 +0530") == datetime(
        2019, 10, 21, 6, 33, 31, tzinfo=UTC
    )
    assert postgres_log.parse_pg_time("2019-10-21 12:03:31 -03") == datetime(
        2019, 10, 21, 15, 3, 31, tzinfo=UTC
    )
    assert postgres_log.parse_pg_time("2019-10-21 12:03:31 XYZT") is None
    assert postgres_log.parse_pg_time("2019-10-21 12:03:31 XYZT", {"XYZT": 60}) == datetime(
        2019, 10, 21, 11, 3, 31, tzinfo=UTC
    )
    (record,) = postgres_log.parse_stderr(
        "2019-10-21 12:03:31.311 XYZT [1] LOG:  statement: SELECT 1\n", prefix="%m [%p] "
    )
    with pytest.raises(DecodeError) as err:
        postgres_log.to_events(record, scope="acme", server="db1")
    assert err.value.field == "$.time"


def test_ids_are_unique_and_server_scoped() -> None:
    records = list(postgres_log.parse_stderr(STDERR))
    ids = [e.id for e in _events(records)]
    assert len(set(ids)) == len(ids)
    other = [e.id for e in _events(records, server="db2")]
    assert not set(ids) & set(other)
    with pytest.raises(DecodeError):
        postgres_log.to_events(records[0], scope="acme", server="has space")


def test_statement_transaction_key_matches_debezium() -> None:
    (record,) = postgres_log.parse_csvlog(CSV_26.split("\n2024-05-01 12:00:01")[0] + "\n")
    (statement,) = _events([record], server="shop-db")
    change = {
        "op": "u",
        "ts_ms": 1714557600000,
        "before": {"id": 1, "note": "old"},
        "after": {"id": 1, "note": "new"},
        "source": {
            "connector": "postgresql",
            "name": "shop-cdc",
            "db": "shop",
            "schema": "public",
            "table": "orders",
            "txId": 731,
            "lsn": 24023128,
            "ts_ms": 1714557600000,
        },
    }
    (data,) = debezium.to_events(change, scope="acme", topic="shop-cdc.public.orders", server="shop-db")
    shared = set(statement.links) & set(data.links)
    assert shared == {"request:pgtx:shop-db:731"}


def test_pgaudit_transcript_sessions_and_synthetic_time() -> None:
    text = (
        "SET pgaudit.log = 'all';\n"
        "NOTICE:  AUDIT: SESSION,1,1,MISC,SET,,,SET pgaudit.log = 'all',<not logged>\n"
        "\\connect - regress_user1\n"
        "CREATE TABLE t\n(\n\tid INT\n);\n"
        'NOTICE:  AUDIT: SESSION,1,1,DDL,CREATE TABLE,TABLE,public.t,"CREATE TABLE t\n(\n\tid INT\n)",<not logged>\n'
        "\\connect - :current_user\n"
        "WARNING:  AUDIT: SESSION,1,1,ROLE,CREATE ROLE,,,CREATE USER u password <REDACTED>,<not logged>\n"
    )
    stats: Counter[str] = Counter()
    records = list(postgres_log.parse_pgaudit_transcript(text, stats=stats))
    assert stats == {"records": 3, "continuation_lines": 3}
    assert [(r.session_id, r.session_line, r.user) for r in records] == [
        ("pgaudit-transcript.0", 1, None),
        ("pgaudit-transcript.1", 1, "regress_user1"),
        ("pgaudit-transcript.2", 1, None),
    ]
    assert [r.line for r in records] == [2, 8, 13]
    assert records[1].time == datetime(2000, 1, 1, 0, 0, 8, tzinfo=UTC)
    events = _events(records)
    assert [e.type for e in events] == ["db.misc", "db.ddl", "access.db.create_role"]
    assert events[1].target.id == "db1/public.t" and events[1].actor.id == "postgres:db1:regress_user1"
    assert events[0].raw["statement"]["normalized"] == "SET pgaudit.log = ?"


def test_pgaudit_line_of_a_multi_statement_query_gets_its_own_target() -> None:
    from pipeline.sources.postgres_log import LogRecord, to_events

    text = "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; GRANT CREATE ON SCHEMA public TO alice;"

    def line(stmt_id: int, cls: str, command: str) -> LogRecord:
        msg = f'AUDIT: SESSION,{stmt_id},1,{cls},{command},,,"{text}",<not logged>'
        return LogRecord(format="csvlog", time=datetime(2026, 11, 27, 2, 0, tzinfo=UTC), message=msg, severity="LOG",
                         user="postgres", database="postgres", session_id="s1", pid=1, line=stmt_id)

    grant = to_events(line(3, "ROLE", "GRANT"), scope="acme", server="pg1")[0]
    assert grant.target.kind == "db.schema" and grant.target.name == "public"
    assert grant.subject == "to alice"
    # Two CREATE ROLE sub-statements: the line cannot tell which, so no role is named.
    create = to_events(line(1, "ROLE", "CREATE ROLE"), scope="acme", server="pg1")[0]
    assert create.target.kind != "db.role" and create.raw["audit"]["ambiguous"] is True
