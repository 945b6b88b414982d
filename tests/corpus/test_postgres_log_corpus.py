"""Every pgBadger fixture and the pgaudit regression transcript parse without a crash and map to
valid envelopes that hold no statement literal (pipeline/sources/postgres_log.py, pgsql.py).

PROVENANCE.md: anonymize.log (csvlog, 23 columns, 8 rows), csv_statement_without_duration.log
(csvlog, 25 columns, 2 rows), cnpg.log (CloudNativePG JSON Lines: 1,975 records + 47 operator
lines = 2,022 lines), cloudsql.log (Cloud Logging JSON Lines, 1,343 lines), light.postgres.log
(stderr, 630 lines), stmt_type.log (stderr, 12 lines), queryid.log (stderr, 63 lines, 25 LOG
entries); pgaudit.out holds 415 AUDIT lines (SESSION DDL 97, MISC 78, WRITE 70, READ 62, ROLE 50,
FUNCTION 16; OBJECT WRITE 23, READ 19). Run with ``pytest -s`` for counts per file and type.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from _audit_corpus import (
    CNPG_PASSWORDS,
    PGAUDIT_FILE,
    PGBADGER_DIR,
    assert_normalized,
    missing,
    string_literals,
)
from _sources_corpus import check_envelope, print_counts

from pipeline.model import Event, encode
from pipeline.sources import postgres_log
from pipeline.sources.postgres_log import LogRecord

for _path in (PGBADGER_DIR, PGAUDIT_FILE):
    if _reason := missing(_path):
        pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

# file -> (format, records, non-record line counts, events by type)
EXPECTED: dict[str, tuple[str, int, dict[str, int], dict[str, int]]] = {
    "anonymize.log": ("csvlog", 8, {}, {"db.query": 2, "db.write": 3}),
    "csv_statement_without_duration.log": ("csvlog", 2, {}, {"db.query": 2}),
    "cnpg.log": (
        "cnpg",
        1975,
        {"not_a_log_record": 47},
        {
            "db.session.started": 386,
            "db.session.ended": 385,
            "db.query": 224,
            "db.misc": 163,
            "db.write": 6,
            "db.ddl": 3,
            "access.db.grant": 4,
            "access.db.alter_role": 3,
            "access.db.create_role": 1,
        },
    ),
    "cloudsql.log": (
        "cloudsql",
        1268,
        {"continuation_lines": 75},
        {"db.session.started": 398, "db.session.ended": 397, "db.query": 1},
    ),
    "light.postgres.log": ("stderr", 630, {}, {"db.write": 366, "db.misc": 187, "db.query": 76}),
    "stmt_type.log": ("stderr", 12, {}, {"db.write": 5, "db.query": 3, "db.misc": 3, "db.ddl": 1}),
    "queryid.log": (
        "stderr",
        28,
        {"continuation_lines": 33, "blank_lines": 2},
        {"db.misc": 14, "db.query": 9},
    ),
}
FILES = sorted(PGBADGER_DIR.iterdir())


def _parse(path: Path, stats: Counter[str] | None = None) -> list[LogRecord]:
    return list(postgres_log.fetch_records(path, stats=stats))


def _originals(record: LogRecord) -> str:
    return "\n".join(t for t in (record.message, record.query, record.detail, record.context) if t)


def _check_no_literals(record: LogRecord, event: Event) -> None:
    data = encode(event).decode()
    statement = event.raw.get("statement") if isinstance(event.raw, dict) else None
    normalized = statement["normalized"] if statement is not None else ""
    if statement is not None:
        assert_normalized(normalized)
    for literal in string_literals(_originals(record)):
        if literal in normalized:  # the same word is also an identifier of the statement
            continue
        assert literal not in data, (literal, event.type)


def test_every_fixture_file_is_covered() -> None:
    assert sorted(p.name for p in FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_fixture_parses_and_maps(path: Path) -> None:
    fmt, n_records, other, types = EXPECTED[path.name]
    stats: Counter[str] = Counter()
    records = _parse(path, stats)
    assert len(records) == stats["records"] == n_records
    assert {r.format for r in records} == {fmt}
    assert {k: v for k, v in stats.items() if k != "records" and v} == other
    with path.open(encoding="utf-8", newline="") as fh:
        n_lines = sum(1 for _ in fh)
    if fmt != "csvlog":
        assert n_records + sum(other.values()) == n_lines  # every line accounted for
    assert all(r.time is not None for r in records)

    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    ids: set[str] = set()
    for record in records:
        for event in postgres_log.to_events(record, scope="corpus", server="pgbadger", stats=reasons):
            check_envelope(event)
            _check_no_literals(record, event)
            counts[event.type] += 1
            ids.add(event.id)
    print_counts(f"postgres {path.name} ({n_records} records, skipped {dict(reasons)})", counts)
    assert counts == types
    assert len(ids) == sum(counts.values())


def test_cnpg_passwords_never_reach_an_envelope() -> None:
    records = _parse(PGBADGER_DIR / "cnpg.log")
    texts = [r.message for r in records]
    assert all(any(p in t for t in texts) for p in CNPG_PASSWORDS)  # they are in the input...
    alters = []
    for record in records:
        for event in postgres_log.to_events(record, scope="corpus", server="cnpg"):
            data = encode(event).decode()
            assert not any(p in data for p in CNPG_PASSWORDS)  # ...and in no output
            if event.type == "access.db.alter_role" and "PASSWORD" in event.raw["statement"]["normalized"]:
                alters.append(event)
    assert len(alters) == 2
    assert {e.target.id for e in alters} == {"cnpg/myapp", "cnpg/postgres"}
    assert all(e.raw["statement"]["password_scrubbed"] for e in alters)
    assert all(e.raw["statement"]["normalized"].endswith("WITH PASSWORD ?") for e in alters)


def test_cnpg_sessions_chain_start_statements_and_end() -> None:
    events = [
        e
        for r in _parse(PGBADGER_DIR / "cnpg.log")
        for e in postgres_log.to_events(r, scope="corpus", server="cnpg")
    ]
    by_session: dict[str, list[Event]] = {}
    for event in events:
        for key in event.links:
            if key.startswith("session:postgres:cnpg:"):
                by_session.setdefault(key, []).append(event)
    assert len(by_session) == 386
    (bootstrap,) = [v for k, v in by_session.items() if k.endswith(":6383b0f7.4e")]
    assert {e.type for e in bootstrap} >= {"db.session.started", "access.db.create_role", "access.db.grant"}
    # the role changes of the bootstrap run in one transaction, which links them too
    tx = [e for e in bootstrap if "request:pgtx:cnpg:727" in e.links]
    assert {e.type for e in tx} == {
        "access.db.create_role",
        "access.db.alter_role",
        "access.db.grant",
        "db.query",
    }


def test_stderr_sessions_are_derived_from_connection_lines() -> None:
    records = _parse(PGBADGER_DIR / "cloudsql.log")
    derived = [r for r in records if r.session_id]
    assert derived and all(r.session_id_derived for r in derived)
    starts = sum(1 for r in records if r.message.startswith("connection received:"))
    assert len({r.session_id for r in derived}) == starts == 400


def test_pgaudit_transcript_415_lines_415_events() -> None:
    stats: Counter[str] = Counter()
    records = list(
        postgres_log.parse_pgaudit_transcript(PGAUDIT_FILE.read_text(encoding="utf-8"), stats=stats)
    )
    assert stats["records"] == 415
    classes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    for record in records:
        (event,) = postgres_log.to_events(record, scope="corpus", server="regress")
        check_envelope(event)
        _check_no_literals(record, event)
        audit = event.raw["audit"]
        classes[f"{audit['audit_type']} {audit['class']}"] += 1
        counts[event.type] += 1
        ids.add(event.id)
        data = encode(event).decode()
        assert "'password" not in data and "md565cb1da342495ea6bb0418a6e5718c38" not in data
    print_counts("pgaudit transcript", counts)
    assert len(ids) == 415
    assert classes == {
        "SESSION DDL": 97,
        "SESSION MISC": 78,
        "SESSION WRITE": 70,
        "SESSION READ": 62,
        "SESSION ROLE": 50,
        "SESSION FUNCTION": 16,
        "OBJECT WRITE": 23,
        "OBJECT READ": 19,
    }
    assert counts["db.ddl"] == 97 and counts["db.misc"] == 78 and counts["db.function"] == 16
    assert counts["db.write"] == 70 + 23 and counts["db.query"] == 62 + 19
    assert sum(v for k, v in counts.items() if k.startswith("access.db.")) == 50
    assert counts["access.db.alter_role"] == 28 and counts["access.db.grant"] == 9


def test_cnpg_sessions_authenticated_by_peer_or_certificate_are_authenticated(tmp_path: Path) -> None:
    """CloudNativePG logs (PostgreSQL 14+) say how each session was authenticated: ``peer`` for
    the operator's local connections, ``cert`` for the instance manager's TLS ones. The fixture
    lists its lines newest first; read in the order the server wrote them, every session whose
    ``connection authenticated`` line was read is ``authenticated`` with that method."""
    lines = (PGBADGER_DIR / "cnpg.log").read_text(encoding="utf-8").splitlines(keepends=True)
    chronological = tmp_path / "cnpg.log"
    chronological.write_text("".join(reversed(lines)), encoding="utf-8")
    stats: Counter[str] = Counter()
    records = list(postgres_log.fetch_records(chronological, stats=stats))
    events = [e for r in records for e in postgres_log.to_events(r, scope="acme", server="pg1", stats=stats)]
    assert stats["authentication"] == 386
    started = [e for e in events if e.type == "db.session.started"]
    assert len(started) == 386
    methods = Counter((e.raw or {}).get("auth_method") for e in started)
    assert methods == {"peer": 382, "cert": 4}
    assert {(e.actor.assurance, e.actor.verified) for e in started} == {("authenticated", True)}
    # every other event of those sessions too (statements, disconnections)
    in_sessions = [e for e in events if any(k.startswith("session:") for k in e.links) and e.actor.principal]
    assert {e.actor.assurance for e in in_sessions} == {"authenticated"}


def test_logs_without_authentication_lines_only_claim_their_roles() -> None:
    """Cloud SQL's export and the pgBadger stderr fixtures have no ``connection authenticated``
    line (log_connections of PostgreSQL 13 or older, or trust): no role there is more than claimed."""
    for name in ("cloudsql.log", "light.postgres.log", "anonymize.log"):
        records = _parse(PGBADGER_DIR / name)
        assurances = {e.actor.assurance for r in records for e in postgres_log.to_events(r, scope="a", server="pg1")}
        assert assurances <= {"claimed", "none"} and "claimed" in assurances, name
