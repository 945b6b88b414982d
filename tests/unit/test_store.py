"""The ClickHouse store on embedded chDB: migrations, the idempotent writer, read-only queries,
named queries and error translation (DESIGN.md §5, §7).

Every test runs against its own database (see conftest.py), so row counts are exact; only the
timeline tests, which just read, share one module-scoped data set.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError
from factories import BASE, event_dict

from pipeline.errors import QueryError, StoreError
from pipeline.model import decode
from pipeline.store import EventWriter, Pending, Position, Store, WriteResult, migrate, queries
from pipeline.store.migrations import MIGRATIONS_DIR, Migration, discover
from pipeline.store.writer import batch_token

NOW = datetime(2026, 11, 28, 9, 30, 0, 654321, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------


def pending(
    d: dict[str, Any], offset: int, *, topic: str = "causelog.changes", partition: int = 0
) -> Pending:
    """A Pending built from an envelope dict, keeping the exact bytes it was decoded from."""
    raw = orjson.dumps(d)
    return Pending(decode(raw), raw, Position(topic, partition, offset))


def batch(indices: range | list[int], *, first_offset: int = 0, partition: int = 0) -> list[Pending]:
    return [pending(event_dict(i), first_offset + n, partition=partition) for n, i in enumerate(indices)]


def count(store: Store, table: str, where: str = "1") -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.{table} WHERE {where}").rows[0][0])


def utc(value: datetime) -> datetime:
    """ClickHouse returns DateTime64(6, 'UTC') as naive UTC datetimes."""
    assert value.tzinfo is None
    return value.replace(tzinfo=UTC)


def write_sql(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


SHIPPED_TABLES = {"events", "event_links", "event_links_mv", "schema_migrations", "v_timeline", "v_actor_activity",
                  "v_link_groups", "chain_edges", "chain_aliases", "v_chain_edges", "v_chain_roots", "v_event_chains", "identities",
                  "checkpoints", "pruned", "holds"}
SHIPPED_TABLES |= {"alerts", "alert_deliveries"}  # migration 007 (rules engine)
SHIPPED_TABLES |= {"session_issuers", "session_issuers_mv"}  # 008_incident
SHIPPED_TABLES |= {"chain_roots"}  # 009_chain_roots


def tables(store: Store) -> set[str]:
    rows = store.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", {"db": store.database}
    ).rows
    return {r[0] for r in rows}


# -- migrations ------------------------------------------------------------------------------


def test_shipped_migrations_apply_in_order_with_checksums(empty_store: Store) -> None:
    applied = migrate(empty_store)

    files = sorted(MIGRATIONS_DIR.glob("*.sql"))
    assert [f"{m.version:03d}_{m.name}.sql" for m in applied] == [f.name for f in files]
    assert [m.version for m in applied] == sorted(m.version for m in applied)
    assert tables(empty_store) == SHIPPED_TABLES

    rows = empty_store.query(
        f"SELECT version, name, checksum FROM {empty_store.database}.schema_migrations ORDER BY version"
    ).rows
    expected = [
        [int(f.name[:3]), f.stem[4:], hashlib.sha256(f.read_text().encode()).hexdigest()] for f in files
    ]
    assert rows == expected


def test_migrations_run_in_version_order_and_record_apply_time(empty_store: Store, tmp_path: Path) -> None:
    # 002 and 003 only work if 001 ran before them, and 003 only after 002.
    write_sql(
        tmp_path / "001_base.sql", "CREATE TABLE {database}.a (x UInt32) ENGINE = MergeTree ORDER BY x;\n"
    )
    write_sql(tmp_path / "003_fill.sql", "INSERT INTO {database}.a SELECT y + 1 FROM {database}.b;\n")
    write_sql(
        tmp_path / "002_copy.sql",
        "CREATE TABLE {database}.b ENGINE = MergeTree ORDER BY y AS SELECT 41 AS y;\n",
    )

    applied = migrate(empty_store, tmp_path)

    assert [(m.version, m.name) for m in applied] == [(1, "base"), (2, "copy"), (3, "fill")]
    db = empty_store.database
    assert empty_store.query(f"SELECT x FROM {db}.a").rows == [[42]]
    rows = empty_store.query(
        f"SELECT version, applied_at FROM {db}.schema_migrations ORDER BY applied_at"
    ).rows
    assert [r[0] for r in rows] == [1, 2, 3]


def test_second_migrate_applies_nothing(store: Store) -> None:
    # The `store` fixture already migrated once.
    before = store.query(
        f"SELECT version, checksum, applied_at FROM {store.database}.schema_migrations ORDER BY version"
    )

    assert migrate(store) == []
    after = store.query(
        f"SELECT version, checksum, applied_at FROM {store.database}.schema_migrations ORDER BY version"
    )
    assert after.rows == before.rows
    assert len(after.rows) == len(list(MIGRATIONS_DIR.glob("*.sql")))


def test_only_new_migrations_are_applied_later(empty_store: Store, tmp_path: Path) -> None:
    write_sql(tmp_path / "001_base.sql", "CREATE TABLE {database}.a (x UInt32) ENGINE = Memory;\n")
    assert [m.version for m in migrate(empty_store, tmp_path)] == [1]

    write_sql(tmp_path / "002_more.sql", "INSERT INTO {database}.a VALUES (7);\n")
    assert [m.version for m in migrate(empty_store, tmp_path)] == [2]
    assert migrate(empty_store, tmp_path) == []
    # 002 ran exactly once.
    assert empty_store.query(f"SELECT x FROM {empty_store.database}.a").rows == [[7]]


def test_migration_edited_after_apply_is_reported(empty_store: Store, tmp_path: Path) -> None:
    base = write_sql(tmp_path / "001_base.sql", "CREATE TABLE {database}.a (x UInt32) ENGINE = Memory;\n")
    migrate(empty_store, tmp_path)
    base.write_text("CREATE TABLE {database}.a (x UInt64) ENGINE = Memory;\n")
    write_sql(tmp_path / "002_later.sql", "CREATE TABLE {database}.later (x UInt32) ENGINE = Memory;\n")

    with pytest.raises(StoreError, match=r"001_base\.sql changed after it was applied"):
        migrate(empty_store, tmp_path)
    # Nothing after the edited file was applied.
    assert "later" not in tables(empty_store)
    assert count(empty_store, "schema_migrations") == 1


@pytest.mark.parametrize(
    "name",
    ["1_x.sql", "0001_x.sql", "001-x.sql", "001_Upper.sql", "001_.sql", "001_x.y.sql", "init.sql"],
    ids=["short-version", "long-version", "dash", "uppercase", "empty-name", "dot-in-name", "no-version"],
)
def test_bad_migration_file_name_is_refused(tmp_path: Path, name: str) -> None:
    write_sql(tmp_path / "001_ok.sql", "SELECT 1;\n")
    write_sql(tmp_path / name, "SELECT 1;\n")
    with pytest.raises(StoreError, match="migration file name") as info:
        discover(tmp_path)
    assert repr(name) in str(info.value)


def test_bad_migration_file_name_applies_nothing(empty_store: Store, tmp_path: Path) -> None:
    write_sql(tmp_path / "001_ok.sql", "CREATE TABLE {database}.ok (x UInt8) ENGINE = Memory;\n")
    write_sql(tmp_path / "2_bad.sql", "SELECT 1;\n")
    with pytest.raises(StoreError, match="2_bad.sql"):
        migrate(empty_store, tmp_path)
    assert "ok" not in tables(empty_store)


def test_duplicate_migration_versions_are_refused(tmp_path: Path) -> None:
    write_sql(tmp_path / "001_first.sql", "SELECT 1;\n")
    write_sql(tmp_path / "001_second.sql", "SELECT 2;\n")
    with pytest.raises(StoreError, match="two migrations share version 001") as info:
        discover(tmp_path)
    assert "first" in str(info.value)
    assert "001_second.sql" in str(info.value)


def test_discover_ignores_other_files_and_sorts(tmp_path: Path) -> None:
    write_sql(tmp_path / "010_ten.sql", "SELECT 10;\n")
    write_sql(tmp_path / "002_two.sql", "SELECT 2;\n")
    write_sql(tmp_path / "README.md", "not a migration")
    found = discover(tmp_path)
    assert [(m.version, m.name, m.sql) for m in found] == [
        (2, "two", "SELECT 2;\n"),
        (10, "ten", "SELECT 10;\n"),
    ]


MULTI = """\
-- Header comment; it ends with a semicolon;
CREATE TABLE IF NOT EXISTS {database}.a
(
    x UInt32  -- trailing comment stays inside the statement
)
ENGINE = Memory;

  -- indented comment line;
CREATE TABLE IF NOT EXISTS {database}.b (s String) ENGINE = Memory ;
INSERT INTO {database}.a VALUES (1), (2);
INSERT INTO {database}.b VALUES ('x;y')
"""


def test_statements_split_at_line_end_semicolons_without_comment_lines() -> None:
    mig = Migration(7, "multi", MULTI)
    statements = mig.statements("mydb")

    assert statements == [
        "CREATE TABLE IF NOT EXISTS mydb.a\n(\n    x UInt32  -- trailing comment stays inside the statement\n)\n"
        "ENGINE = Memory",
        "CREATE TABLE IF NOT EXISTS mydb.b (s String) ENGINE = Memory",
        "INSERT INTO mydb.a VALUES (1), (2)",
        "INSERT INTO mydb.b VALUES ('x;y')",
    ]
    assert mig.checksum == hashlib.sha256(MULTI.encode()).hexdigest()


def test_only_comments_yields_no_statements() -> None:
    assert Migration(1, "empty", "-- nothing here;\n\n   \n-- still nothing\n").statements("db") == []


def test_multi_statement_migration_applies_every_statement(empty_store: Store, tmp_path: Path) -> None:
    write_sql(tmp_path / "001_multi.sql", MULTI)
    migrate(empty_store, tmp_path)
    db = empty_store.database
    assert empty_store.query(f"SELECT x FROM {db}.a ORDER BY x").rows == [[1], [2]]
    assert empty_store.query(f"SELECT s FROM {db}.b").rows == [["x;y"]]


def test_failing_migration_raises_store_error_and_is_not_recorded(empty_store: Store, tmp_path: Path) -> None:
    write_sql(tmp_path / "001_ok.sql", "CREATE TABLE {database}.ok (x UInt8) ENGINE = Memory;\n")
    write_sql(tmp_path / "002_broken.sql", "CREATE TABLE {database}.broken (x NoSuchType) ENGINE = Memory;\n")
    with pytest.raises(StoreError, match="CREATE TABLE"):
        migrate(empty_store, tmp_path)
    rows = empty_store.query(f"SELECT version FROM {empty_store.database}.schema_migrations").rows
    assert rows == [[1]]


# -- writer ----------------------------------------------------------------------------------


def rich_event() -> dict[str, Any]:
    d = event_dict(5, scope="globex")
    d.update(
        time="2026-11-27T03:04:05.123456+02:00",
        observed_time="2026-11-27T01:05:00.000001Z",
        subject="deployment/web",
        actor={
            "id": "alice@globex.io",
            "display": "Alice",
            "kind": "human",
            "principal": "arn:aws:iam::1:user/alice",
            "verified": True,
            "assurance": "mfa",
        },
        target={
            "kind": "k8s.deployment",
            "id": "web",
            "name": "web-frontend",
            "environment": "staging",
            "service": "storefront",
        },
        action="scale",
        outcome="failure",
        links=["deploy:42", "trace:4bf92f3577b34da6a3ce929d0e0e4736", "request:r-1"],
        source_seq="lsn/0/16B3748",
    )
    return d


def test_write_stores_exactly_the_rows(store: Store) -> None:
    d = rich_event()
    # Not the canonical encoding (spaces, key order): the envelope column keeps these exact bytes.
    raw = b'{"specversion": "1.0",  ' + orjson.dumps(d)[1:]
    rich = Pending(decode(raw), raw, Position("causelog.changes", 3, 1234567))
    plain = pending(event_dict(6), 1234568, partition=3)

    result = EventWriter(store).write([rich, plain], now=NOW)

    assert result == WriteResult(inserted=2, duplicates=0)
    assert count(store, "events") == 2
    got = store.query(f"SELECT * FROM {store.database}.events WHERE id = {{id:String}}", {"id": d["id"]})
    row = dict(zip(got.columns, got.rows[0], strict=True))
    assert utc(row.pop("time")) == datetime(2026, 11, 27, 1, 4, 5, 123456, tzinfo=UTC)
    assert utc(row.pop("observed_time")) == datetime(2026, 11, 27, 1, 5, 0, 1, tzinfo=UTC)
    assert utc(row.pop("ingested_at")) == NOW
    assert row.pop("envelope") == raw.decode()
    assert row == {
        "id": d["id"], "scope": "globex", "type": "config.changed", "source": "causelog://test",
        "subject": "deployment/web",
        "actor_id": "alice@globex.io", "actor_display": "Alice", "actor_kind": "human",
        "actor_principal": "arn:aws:iam::1:user/alice", "actor_verified": True, "actor_assurance": "mfa",
        "target_kind": "k8s.deployment", "target_id": "web", "target_name": "web-frontend",
        "target_environment": "staging", "target_service": "storefront",
        "action": "scale", "outcome": "failure",
        "links": ["deploy:42", "trace:4bf92f3577b34da6a3ce929d0e0e4736", "request:r-1"],
        "source_seq": "lsn/0/16B3748", "chain_id": "", "chain_time": datetime(1970, 1, 1),
        "kafka_topic": "causelog.changes", "kafka_partition": 3, "kafka_offset": 1234567,
        "log_index": -1, "leaf_hash": b"\x00" * 32,
    }  # fmt: skip

    # Defaults of the plain event: no observed_time -> ingestion time; optional fields empty.
    got = store.query(
        f"SELECT observed_time, subject, actor_display, target_name, source_seq, kafka_offset "
        f"FROM {store.database}.events WHERE id = {{id:String}}",
        {"id": event_dict(6)["id"]},
    )
    observed, *rest = got.rows[0]
    assert utc(observed) == NOW
    assert rest == ["", "", "", "6", 1234568]


def test_write_is_idempotent_for_the_same_batch(store: Store) -> None:
    writer = EventWriter(store)
    events = batch(range(5), first_offset=100)
    assert writer.write(events, now=NOW) == WriteResult(5, 0)
    assert writer.write(events, now=NOW) == WriteResult(0, 5)
    assert count(store, "events") == 5
    assert count(store, "event_links") == 10


def test_same_id_twice_in_a_batch_is_stored_once(store: Store) -> None:
    first = pending(event_dict(1), 10)
    again = pending(event_dict(1), 11)
    other = pending(event_dict(2), 12)

    assert EventWriter(store).write([first, again, other], now=NOW) == WriteResult(2, 1)
    rows = store.query(f"SELECT id, kafka_offset FROM {store.database}.events ORDER BY kafka_offset").rows
    assert rows == [[first.event.id, 10], [other.event.id, 12]]


def test_recut_batch_stores_only_new_events(store: Store) -> None:
    writer = EventWriter(store)
    assert writer.write(batch(range(0, 5), first_offset=0), now=NOW) == WriteResult(5, 0)
    # After a crash the consumer re-reads from offset 3 and cuts the batch differently.
    assert writer.write(batch(range(3, 8), first_offset=3), now=NOW) == WriteResult(3, 2)

    rows = store.query(
        f"SELECT source_seq, kafka_offset FROM {store.database}.events ORDER BY kafka_offset"
    ).rows
    assert rows == [[str(i), i] for i in range(8)]
    assert count(store, "event_links") == 16


def test_replayed_events_at_new_offsets_are_duplicates(store: Store) -> None:
    writer = EventWriter(store)
    writer.write(batch(range(4), first_offset=0), now=NOW)
    # A source replayed the same records: same ids, completely different offsets and partition.
    assert writer.write(batch(range(4), first_offset=500, partition=2), now=NOW) == WriteResult(0, 4)
    assert count(store, "events") == 4


def test_empty_batch_writes_nothing(store: Store) -> None:
    assert EventWriter(store).write([], now=NOW) == WriteResult(0, 0)
    assert count(store, "events") == 0


def positions(*spec: tuple[str, int, int]) -> list[Position]:
    return [Position(t, p, o) for t, p, o in spec]


def test_batch_token_is_deterministic_and_order_free() -> None:
    a = positions(("c", 0, 10), ("c", 0, 11), ("c", 1, 5), ("c", 0, 12), ("c", 1, 6))
    token = batch_token(a)
    assert token == batch_token(list(a))
    assert token == batch_token(list(reversed(a)))
    assert token == batch_token(sorted(a, key=lambda p: (p.partition, -p.offset)))
    assert len(token) == 64 and int(token, 16) >= 0


def test_batch_token_depends_on_spans_only() -> None:
    # Only the first and last offset per topic-partition matter.
    assert batch_token(positions(("c", 0, 10), ("c", 0, 20))) == batch_token(
        positions(("c", 0, 10), ("c", 0, 15), ("c", 0, 20))
    )


@pytest.mark.parametrize(
    "other",
    [
        positions(("c", 0, 10), ("c", 0, 21)),
        positions(("c", 0, 9), ("c", 0, 20)),
        positions(("c", 1, 10), ("c", 1, 20)),
        positions(("d", 0, 10), ("d", 0, 20)),
        positions(("c", 0, 10), ("c", 0, 20), ("c", 1, 0)),
        positions(("c", 0, 10)),
    ],
    ids=["later-end", "earlier-start", "other-partition", "other-topic", "extra-partition", "single-offset"],
)
def test_batch_token_changes_with_the_span(other: list[Position]) -> None:
    assert batch_token(positions(("c", 0, 10), ("c", 0, 20))) != batch_token(other)


def test_event_links_follow_through_the_view(store: Store) -> None:
    d = rich_event()
    no_links = dict(event_dict(7), links=[])
    EventWriter(store).write([pending(d, 0), pending(no_links, 1)], now=NOW)

    rows = store.query(
        f"SELECT key, key_type, event_id, time, scope FROM {store.database}.event_links ORDER BY key"
    ).rows
    when = datetime(2026, 11, 27, 1, 4, 5, 123456)
    assert rows == [
        ["deploy:42", "deploy", d["id"], when, "globex"],
        ["request:r-1", "request", d["id"], when, "globex"],
        ["trace:4bf92f3577b34da6a3ce929d0e0e4736", "trace", d["id"], when, "globex"],
    ]


def test_key_type_is_the_text_before_the_first_colon(store: Store) -> None:
    d = dict(event_dict(1), links=["session:aws:ASIA:123", "change:org/repo#12"])
    EventWriter(store).write([pending(d, 0)], now=NOW)
    rows = store.query(f"SELECT key_type, key FROM {store.database}.event_links ORDER BY key").rows
    assert rows == [["change", "change:org/repo#12"], ["session", "session:aws:ASIA:123"]]


def test_retried_insert_with_same_token_is_dropped_in_events_and_links(store: Store) -> None:
    from pipeline.store.writer import EVENT_COLUMNS, event_row

    rows = [event_row(p, NOW) for p in batch(range(3))]
    store.insert("events", rows, EVENT_COLUMNS, token="tok-1")
    store.insert("events", rows, EVENT_COLUMNS, token="tok-1")
    assert (count(store, "events"), count(store, "event_links")) == (3, 6)

    # A different token is a different batch: ClickHouse stores it (the writer's id filter is
    # what protects against that), which shows the token is what dropped the retry above.
    store.insert("events", rows, EVENT_COLUMNS, token="tok-2")
    assert (count(store, "events"), count(store, "event_links")) == (6, 12)


# -- readonly --------------------------------------------------------------------------------


def test_readonly_select_with_parameters(store: Store) -> None:
    EventWriter(store).write(batch(range(6)), now=NOW)
    result = store.readonly(
        f"SELECT source_seq, target_id FROM {store.database}.events "
        "WHERE toUInt32(source_seq) >= {lo:UInt32} ORDER BY time",
        {"lo": 4},
    )
    assert result.columns == ["source_seq", "target_id"]
    assert result.rows == [["4", "svc-4"], ["5", "svc-5"]]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO {db}.events (id) VALUES ('x')",
        "ALTER TABLE {db}.events DELETE WHERE 1",
        "ALTER TABLE {db}.events ADD COLUMN extra String",
        "DROP TABLE {db}.events",
        "CREATE TABLE {db}.evil (x UInt8) ENGINE = Memory",
        "TRUNCATE TABLE {db}.events",
        "SET readonly = 0",
        "SELECT count() FROM {db}.events SETTINGS readonly = 0",
    ],
    ids=[
        "insert",
        "alter-delete",
        "alter-add-column",
        "drop",
        "create",
        "truncate",
        "unset-readonly",
        "settings-clause",
    ],
)
def test_readonly_refuses_changes(store: Store, sql: str) -> None:
    writer = EventWriter(store)
    writer.write(batch(range(2)), now=NOW)

    with pytest.raises(QueryError, match="^query rejected: "):
        store.readonly(sql.format(db=store.database))

    assert count(store, "events") == 2
    assert tables(store) == SHIPPED_TABLES
    cols = store.query(
        f"SELECT name FROM system.columns WHERE database = '{store.database}' AND table = 'events'"
    )
    assert "extra" not in {r[0] for r in cols.rows}
    # The refusal must not leave the store read-only: the worker keeps writing through it.
    assert writer.write(batch(range(2, 4), first_offset=2), now=NOW) == WriteResult(2, 0)
    assert count(store, "events") == 4


def test_readonly_still_refuses_after_many_calls(store: Store) -> None:
    for _ in range(3):
        assert store.readonly("SELECT 1 AS one").rows == [[1]]
        with pytest.raises(QueryError):
            store.readonly(f"DROP TABLE {store.database}.events")
    assert "events" in tables(store)


@pytest.mark.parametrize("limit", [1, 10, 999], ids=["one", "ten", "999"])
def test_readonly_limit_caps_rows(empty_store: Store, limit: int) -> None:
    result = empty_store.readonly("SELECT number FROM numbers(200000)", limit=limit)
    assert [r[0] for r in result.rows] == list(range(limit))


def test_readonly_limit_above_result_returns_everything(empty_store: Store) -> None:
    assert len(empty_store.readonly("SELECT number FROM numbers(25)", limit=1000).rows) == 25


def test_readonly_bad_sql_is_a_query_error(empty_store: Store) -> None:
    with pytest.raises(QueryError, match="query rejected: .*Syntax error") as info:
        empty_store.readonly("SELECT (1")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, StoreError)


# -- named queries ---------------------------------------------------------------------------


def ev(i: int, at: datetime, **changes: Any) -> dict[str, Any]:
    d = event_dict(i)
    d["time"] = at.isoformat()
    d.update(changes)
    return d


T0 = BASE + timedelta(hours=1)


@pytest.fixture(scope="module")
def timeline_store(session_store: Store) -> Iterator[tuple[Store, list[dict[str, Any]]]]:
    """One database with a fixed data set shared by the timeline tests (they only read it)."""
    database = f"t_{uuid.uuid4().hex}"
    store = Store(session_store.client, database, embedded=True, where=session_store.where)
    store.command(f"CREATE DATABASE {database}")
    try:
        migrate(store)
        yield store, _timeline_events(store)
    finally:
        session_store.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def _timeline_events(store: Store) -> list[dict[str, Any]]:
    same = T0 + timedelta(seconds=2)
    events = [
        ev(0, T0, target={"kind": "service", "id": "api", "name": "public-api"}),
        ev(1, T0 + timedelta(seconds=1), target={"kind": "service", "id": "db", "name": "orders-db"}),
        ev(2, same, target={"kind": "service", "id": "api"}),
        ev(3, same, target={"kind": "service", "id": "web", "name": "api"}),
        ev(4, same, scope="other", target={"kind": "service", "id": "api"}),
        ev(5, T0 + timedelta(seconds=3, microseconds=1), target={"kind": "service", "id": "db"}),
    ]
    # Written in reverse, in two batches, so storage order is not the expected order.
    writer = EventWriter(store)
    writer.write([pending(d, 10 + n) for n, d in enumerate(events[3:])][::-1], now=NOW)
    writer.write([pending(d, n) for n, d in enumerate(events[:3])][::-1], now=NOW)
    return events


def ids_of(result: queries.QueryResult) -> list[str]:
    return [row[result.columns.index("id")] for row in result.rows]


def test_timeline_orders_by_time_then_id(timeline_store: tuple[Store, list[dict[str, Any]]]) -> None:
    store, events = timeline_store
    result = queries.timeline(store)

    assert tuple(result.columns) == queries.TIMELINE_COLUMNS
    tied = sorted(d["id"] for d in events[2:5])
    assert ids_of(result) == [events[0]["id"], events[1]["id"], *tied, events[5]["id"]]
    times = [utc(r[0]) for r in result.rows]
    assert times == sorted(times)
    first = dict(zip(result.columns, result.rows[0], strict=True))
    assert first["target_id"] == "api"
    assert first["links"] == events[0]["links"]


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (T0 + timedelta(seconds=1), None, [1, 2, 3, 4, 5]),
        (T0 + timedelta(seconds=1, microseconds=1), None, [2, 3, 4, 5]),
        (None, T0 + timedelta(seconds=3, microseconds=1), [0, 1, 2, 3, 4, 5]),
        (None, T0 + timedelta(seconds=3), [0, 1, 2, 3, 4]),
        (T0 + timedelta(seconds=2), T0 + timedelta(seconds=2), [2, 3, 4]),
        (T0 + timedelta(seconds=4), None, []),
        # An aware bound in another zone means the same instant.
        ((T0 + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=-5))), None, [1, 2, 3, 4, 5]),
    ],
    ids=[
        "since-inclusive",
        "since-exclusive-by-1us",
        "until-inclusive-us",
        "until-before-last",
        "single-instant",
        "empty",
        "since-other-zone",
    ],
)
def test_timeline_bounds_are_inclusive(
    timeline_store: tuple[Store, list[dict[str, Any]]],
    since: datetime | None,
    until: datetime | None,
    expected: list[int],
) -> None:
    store, events = timeline_store
    got = queries.timeline(store, since=since, until=until)
    assert sorted(ids_of(got)) == sorted(events[i]["id"] for i in expected)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"target": "api"}, [0, 2, 3, 4]),  # id "api" (0, 2, 4) or name "api" (3)
        ({"target": "orders-db"}, [1]),
        ({"target": "db"}, [1, 5]),
        ({"target": "nothing"}, []),
        ({"scope": "other"}, [4]),
        ({"scope": "acme", "target": "api"}, [0, 2, 3]),
        ({"limit": 2}, [0, 1]),
        ({"limit": 4, "target": "api"}, [0, 2, 3, 4]),
    ],
    ids=[
        "target-id-or-name",
        "target-name",
        "target-id",
        "target-unknown",
        "scope",
        "scope-and-target",
        "limit",
        "limit-with-filter",
    ],
)
def test_timeline_filters(
    timeline_store: tuple[Store, list[dict[str, Any]]], kwargs: dict[str, Any], expected: list[int]
) -> None:
    store, events = timeline_store
    got = ids_of(queries.timeline(store, **kwargs))
    assert sorted(got) == sorted(events[i]["id"] for i in expected)
    if "limit" in kwargs:
        assert len(got) <= kwargs["limit"]


def test_timeline_limit_keeps_the_earliest(timeline_store: tuple[Store, list[dict[str, Any]]]) -> None:
    store, events = timeline_store
    tied = sorted(d["id"] for d in events[2:5])
    assert ids_of(queries.timeline(store, limit=3)) == [events[0]["id"], events[1]["id"], tied[0]]


def test_stats_counts_events_links_and_chains(store: Store) -> None:
    from pipeline.correlate.partition import correlate_batch

    empty = {"events": 0, "event_links": 0, "chain_edges": 0, "chain_aliases": 0, "identities": 0}
    assert queries.stats(store) == empty
    writer = EventWriter(store)
    # Events 0-3 share session:test:0, 9 has a trace of its own; 3 arrives first (out of order).
    todo = [pending(event_dict(3), 0), *batch(range(3)), pending(dict(event_dict(9), links=["trace:abc"]), 4)]
    c = correlate_batch({}, [(p.event, 0, i) for i, p in enumerate(todo)])
    writer.write(todo, now=NOW, chains=c.chains, edges=c.edges, aliases=c.aliases)
    # Edge rows: 3->0, then 1 and 2 each land in between (one retraction, two edges each);
    # 3 headed the chain until 0 arrived: one alias.
    assert queries.stats(store) == {**empty, "events": 5, "event_links": 9, "chain_edges": 7, "chain_aliases": 1}
    stored = {r[0]: r[1] for r in store.query(f"SELECT id, chain_id FROM {store.database}.events").rows}
    assert stored[event_dict(9)["id"]] == event_dict(9)["id"]
    chain = queries.chain(store, event_dict(3)["id"])
    assert chain["chain_id"] == event_dict(0)["id"]
    ids = [event_dict(i)["id"] for i in range(4)]
    assert [e["id"] for e in chain["events"]] == ids
    assert {(e["from"], e["to"]) for e in chain["edges"] if e["key_type"] == "session"} == {
        (ids[1], ids[0]), (ids[2], ids[1]), (ids[3], ids[2])}


# -- error translation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda s: s.query("SELEC 1"), "failed on SELEC 1: "),
        (
            lambda s: s.query(f"SELECT * FROM {s.database}.missing\nWHERE 1"),
            "failed on SELECT * FROM {db}.missing: ",
        ),
        (lambda s: s.command("CREATE TABLE x (a NoSuchType) ENGINE = Memory"), "failed on CREATE TABLE x"),
        (lambda s: s.insert("missing", [[1]], ["a"]), "failed on insert into missing (1 rows): "),
    ],
    ids=["syntax", "unknown-table", "bad-ddl", "insert-missing-table"],
)
def test_clickhouse_errors_become_store_errors(empty_store: Store, call: Any, fragment: str) -> None:
    with pytest.raises(StoreError) as info:
        call(empty_store)
    exc = info.value
    assert type(exc) is StoreError
    assert not isinstance(exc, ClickHouseError)
    assert isinstance(exc.__cause__, ClickHouseError)
    message = str(exc)
    assert message.startswith(f"ClickHouse ({empty_store.where}) ")
    assert fragment.format(db=empty_store.database) in message
    assert "\n" not in message
    # The first line of ClickHouse's own message is kept: code and text.
    assert "DB::Exception" in message


def test_batch_token_covers_the_ids_it_inserts() -> None:
    # A recreated topic restarts its offsets: same span, other events, so another token.
    span = positions(("c", 0, 0), ("c", 0, 1))
    assert batch_token(span, ["a", "b"]) == batch_token(span, ["b", "a"])
    assert batch_token(span, ["a", "b"]) != batch_token(span, ["c", "d"])


def test_existing_ids_in_a_crowded_span_are_searched_by_id(store: Store) -> None:
    writer = EventWriter(store)
    writer.write(batch(range(0, 1000), first_offset=0), now=NOW)
    # A two-event batch whose time span covers all 1000 stored rows: the id search path.
    edges = [pending(event_dict(i), 5000 + n) for n, i in enumerate((0, 999, 5000))]
    assert writer.existing_ids([p.event for p in edges]) == {event_dict(0)["id"], event_dict(999)["id"]}
    assert writer.write(edges, now=NOW) == WriteResult(1, 2)
    assert count(store, "events") == 1001


def test_views_answer_incident_questions(store: Store) -> None:
    EventWriter(store).write(batch(range(30)), now=NOW)
    db = store.database
    first = store.readonly(f"SELECT id FROM {db}.v_timeline LIMIT 1").rows
    assert first == [[event_dict(0)["id"]]]
    actors = store.readonly(f"SELECT actor_id, events FROM {db}.v_actor_activity ORDER BY actor_id").rows
    assert sum(n for _, n in actors) == 30 and len(actors) == 17
    groups = store.readonly(f"SELECT key, events FROM {db}.v_link_groups ORDER BY key").rows
    # event_dict links session:test:<i // 10>: three sessions of ten events; commits are unique.
    assert groups == [["session:test:0", 10], ["session:test:1", 10], ["session:test:2", 10]]


def test_chain_rows_are_tuples_in_column_order() -> None:
    """The writer transposes chain rows as tuples: their fields must be the columns, in order."""
    from pipeline.correlate.partition import AliasRow, EdgeRow
    from pipeline.store.writer import ALIAS_COLUMNS, EDGE_COLUMNS

    def column(field: str) -> str:
        return {"time_us": "time", "new_head_us": "new_head_time"}.get(field, field)

    assert tuple(map(column, EdgeRow._fields)) == EDGE_COLUMNS
    assert tuple(map(column, AliasRow._fields)) == ALIAS_COLUMNS
