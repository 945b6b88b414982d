"""A real PostgreSQL 15+ with pgaudit writes csvlog and jsonlog; `causelog ingest postgres-log` reads them.

The cluster (deploy/postgres/pg.sh, started here on a free port) logs connections,
disconnections, every statement (``log_statement = all``) and pgaudit's READ, WRITE, FUNCTION,
ROLE and DDL classes. Two roles work in it: alice creates a table, writes literals that must never
leave the log (a card number, a password-looking string), grants bob SELECT and changes bob's
password; bob runs a query carrying a sqlcommenter ``traceparent``. Both log files are ingested
and the envelopes in Kafka are checked: sessions, statements, actors, links, no literal anywhere.
Then a big log is ingested by a source killed with SIGKILL mid-file and restarted: every event
is in Kafka exactly once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_stack import Stack, free_port
from pg_fixture import PgCluster, missing

from pipeline.model import decode
from pipeline.sources import postgres_log

_WHY_NOT = missing()
# Skipped on a developer's machine without PostgreSQL; in CI (.ci/run installs it) a missing
# server is a failure, not a skip that would hide a broken install step.
_IN_CI = os.environ.get("CI") == "true"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_WHY_NOT is not None and not _IN_CI, reason=f"real PostgreSQL test: {_WHY_NOT}"),
]

SERVER = "pg-test"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
CARD = "4111111111111111"
NOTE = "hunter2-s3cr3t-note"
PASSWORD = "Sup3r-S3cret-Pw!"
BIG_STATEMENTS = 3_000
# Literals of the big workload that must not appear either (one per statement would be too many
# to check one by one; these are a sample).
BIG_SECRET = "zz-secret-{i:05d}-zz"


class Logs:
    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.scenario: dict[str, Path] = {}
        self.big: dict[str, Path] = {}


@pytest.fixture(scope="module")
def pg_logs() -> Iterator[Logs]:
    if _WHY_NOT is not None:
        pytest.fail(f"CI=true but {_WHY_NOT}")
    cluster = PgCluster(free_port(), CAUSELOG_PG_LOG_STATEMENT="all")
    try:
        cluster.start()
        logs = Logs(cluster)
        _scenario(cluster)
        csv_path, json_path = cluster.current_logs()
        # The collector writes asynchronously: wait for the last disconnection of the scenario
        # (5 sessions: setup, alice, the pg_hba.conf reload, bob, current_logs) before switching files.
        for path in (csv_path, json_path):
            cluster.wait_for(path, "disconnection: session time", 5)
        logs.scenario = dict(zip(("csvlog", "jsonlog"), cluster.rotate(), strict=True))
        _big_workload(cluster)
        csv_path, _ = cluster.current_logs()
        # rotate's DO session, its pg_current_logfile session, the workload, current_logs
        cluster.wait_for(csv_path, "disconnection: session time", 4)
        logs.big = dict(zip(("csvlog", "jsonlog"), cluster.rotate(), strict=True))
        yield logs
    finally:
        cluster.stop()


def _scenario(pg: PgCluster) -> None:
    pg.psql("CREATE ROLE alice LOGIN CREATEROLE;\nCREATE ROLE bob LOGIN;\nGRANT CREATE ON SCHEMA public TO alice;\n")
    pg.psql(
        "CREATE TABLE payments (id int PRIMARY KEY, card text, note text);\n"
        f"INSERT INTO payments VALUES (1, '{CARD}', '{NOTE}');\n"
        "GRANT SELECT ON payments TO bob;\n"
        f"ALTER ROLE bob PASSWORD '{PASSWORD}';\n",
        user="alice",
    )
    pg.require_password("bob")  # alice set it; from now on the server checks it (SCRAM)
    out = pg.psql(f"SELECT card FROM payments WHERE id = 1 /*traceparent='{TRACEPARENT}'*/;\n",
                  user="bob", app="billing", password=PASSWORD)
    assert out.strip() == CARD


def _big_workload(pg: PgCluster) -> None:
    """Many statements in one session; every tenth spans lines (csvlog quoted fields over lines)."""
    lines = ["CREATE TABLE bulk (id int, secret text);"]
    for i in range(BIG_STATEMENTS):
        secret = BIG_SECRET.format(i=i)
        if i % 10 == 0:
            lines.append(f"INSERT INTO bulk\n  VALUES ({i},\n  '{secret}\nsecond line');")
        else:
            lines.append(f"INSERT INTO bulk VALUES ({i}, '{secret}');")
    pg.psql("\n".join(lines) + "\n", user="alice", app="bulk-loader")


def _events(msgs: list[Any]) -> list[dict[str, Any]]:
    out = []
    for m in msgs:
        decode(m.value())  # a valid envelope
        out.append(orjson.loads(m.value()))
    return out


def _expected_events(path: Path) -> list[Any]:
    return [e for r in postgres_log.fetch_records(path)
            for e in postgres_log.to_events(r, scope="default", server=SERVER)]


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_real_log_sessions_statements_and_links(pg_logs: Logs, stack: Stack, fmt: str) -> None:
    path = pg_logs.scenario[fmt]
    expected = _expected_events(path)
    assert len(expected) >= 20, f"{path.name}: only {len(expected)} events"
    done = stack.cli("ingest", "postgres-log", str(path), "--server", SERVER)
    assert done.returncode == 0, done.stderr
    assert f"-> {len(expected):,} events" in done.stderr, done.stderr
    msgs = stack.read_topic(stack.settings.topic_changes, expected=len(expected), timeout=30)
    events = _events(msgs)
    assert sorted(e["id"] for e in events) == sorted(e.id for e in expected)

    # No literal value anywhere: values, keys, headers.
    for m in msgs:
        blob = m.value() + (m.key() or b"") + b"".join(v or b"" for _, v in m.headers() or [])
        for secret in (CARD, NOTE, PASSWORD, b"hunter2"):
            secret_b = secret.encode() if isinstance(secret, str) else secret
            assert secret_b not in blob, f"{secret!r} leaked in {blob[:300]!r}"

    by_session: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        for link in e["links"]:
            if link.startswith(f"session:postgres:{SERVER}:"):
                by_session.setdefault(link, []).append(e)
    sessions = {}
    for user in ("alice", "bob"):
        started = [e for e in events if e["type"] == "db.session.started"
                   and e["actor"].get("principal") == user]
        assert len(started) == 1, f"{user}: {len(started)} session starts"
        (link,) = [x for x in started[0]["links"] if x.startswith("session:")]
        session_id = link.rsplit(":", 1)[1]
        assert started[0]["raw"]["session_id"] == session_id
        members = by_session[link]
        assert {e["type"] for e in members} >= {"db.session.started", "db.session.ended"}
        assert all(e["actor"]["id"] == f"postgres:{SERVER}:{user}" for e in members)
        sessions[user] = members
    # alice came in under `trust`: the server checked nothing, the log shows no authentication
    assert {(e["actor"]["assurance"], e["actor"]["verified"]) for e in sessions["alice"]} == {("claimed", False)}
    assert not any("auth_method" in e["raw"] for e in sessions["alice"])
    # bob's password was checked (SCRAM): every event of his session is authenticated
    assert {(e["actor"]["assurance"], e["actor"]["verified"]) for e in sessions["bob"]} == {("authenticated", True)}
    assert {(e["raw"]["auth_method"], e["raw"]["auth_identity"]) for e in sessions["bob"]} == {("scram-sha-256", "bob")}
    assert sessions["alice"][0]["raw"]["client"].startswith("127.0.0.1")

    alice = sessions["alice"]
    # Each statement is seen twice: `statement:` (log_statement) and pgaudit's AUDIT line.
    def of(kind: str, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in members if e["type"] == kind]

    ddl = of("db.ddl", alice)
    assert len(ddl) == 2 and {e["action"] for e in ddl} == {"create table"}
    assert {e["target"]["id"] for e in ddl} == {f"{SERVER}/postgres/payments"}
    writes = of("db.write", alice)
    assert len(writes) == 2 and {e["action"] for e in writes} == {"insert"}
    grants = of("access.db.grant", alice)
    assert len(grants) == 2
    assert {(e["target"]["id"], e.get("subject")) for e in grants} == {(f"{SERVER}/postgres/payments", "to bob")}
    alters = of("access.db.alter_role", alice)
    assert len(alters) == 2 and {e["target"]["id"] for e in alters} == {f"{SERVER}/bob"}
    audit = [e for e in alice if "audit" in e["raw"]]
    assert {e["raw"]["audit"]["class"] for e in audit} == {"DDL", "WRITE", "ROLE"}
    # The statement is kept normalised with the keyed hash of its full text.
    for e in ddl + writes + grants + alters:
        statement = e["raw"]["statement"]
        assert re.fullmatch(r"hmac-sha256:v1:[0-9a-f]{32}", statement["hash"]), statement
    insert = next(e for e in writes if "audit" not in e["raw"])
    assert insert["raw"]["statement"]["normalized"] == "INSERT INTO payments VALUES (?, ?, ?)"
    assert insert["raw"]["message"] == "statement: INSERT INTO payments VALUES (?, ?, ?)"
    alter = next(e for e in alters if "audit" not in e["raw"])
    assert alter["raw"]["statement"]["normalized"] == "ALTER ROLE bob PASSWORD ?"
    # DDL, write and grant of one statement share the transaction link with pgaudit's line.
    assert any(x.startswith(f"request:pgtx:{SERVER}:") for e in grants for x in e["links"])

    bob = sessions["bob"]
    queries = of("db.query", bob)
    assert len(queries) == 2
    for e in queries:
        assert f"trace:{TRACE_ID}" in e["links"]
        assert e["raw"]["application_name"] == "billing"
        assert e["raw"]["statement"]["normalized"].startswith("SELECT card FROM payments WHERE id = ?")
    # Only bob's query carries the trace.
    assert {e["id"] for e in events if f"trace:{TRACE_ID}" in e["links"]} == {e["id"] for e in queries}


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_real_log_source_killed_mid_file_resumes_exactly_once(pg_logs: Logs, stack: Stack, fmt: str) -> None:
    path = pg_logs.big[fmt]
    expected = _expected_events(path)
    expected_ids = {e.id for e in expected}
    assert len(expected_ids) == len(expected) >= 2 * BIG_STATEMENTS
    if fmt == "csvlog":  # the cursor counts lines: records spanning lines must resume right
        assert any(r.line_end != r.line for r in postgres_log.fetch_records(path)), "no multi-line record"

    cmd = [sys.executable, "-m", "pipeline.cli.main", "ingest", "postgres-log", str(path), "--server", SERVER]
    proc = subprocess.Popen(cmd, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while (seen := _committed(stack)) < 500:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no committed output"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    seen = _committed(stack)
    print(f"killed after {seen} committed offsets (events + transaction markers) of {len(expected)} events")
    assert seen < len(expected), "the source finished before it was killed; the test proves nothing"

    again = stack.cli("ingest", "postgres-log", str(path), "--server", SERVER)
    assert again.returncode == 0, again.stderr
    msgs = stack.read_topic(stack.settings.topic_changes, expected=len(expected), timeout=60)
    ids = Counter(orjson.loads(m.value())["id"] for m in msgs)
    assert max(ids.values()) == 1, f"repeated: {[i for i, n in ids.items() if n > 1][:5]}"
    assert set(ids) == expected_ids, f"missing {len(expected_ids - set(ids))}, extra {len(set(ids) - expected_ids)}"
    for m in msgs[:: max(1, len(msgs) // 500)]:
        assert b"zz-secret-" not in m.value()

    third = stack.cli("ingest", "postgres-log", str(path), "--server", SERVER)
    assert third.returncode == 0 and "0 records -> 0 events" in third.stderr, third.stderr


def _committed(stack: Stack) -> int:
    from confluent_kafka import Consumer, TopicPartition

    topic = stack.settings.topic_changes
    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": "probe",
                  "isolation.level": "read_committed"})
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        c.close()
