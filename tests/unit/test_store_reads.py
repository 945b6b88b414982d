"""Reads on their own handles (pipeline/store/client.py): read-only, limited, cancellable, and never
in the way of the writer (issue 9 item 1, issue 14 item 3)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from factories import event_dict

from pipeline.errors import QueryError, StoreError
from pipeline.store import Store, migrate
from pipeline.store.client import QueryLimits

HEAVY = "SELECT count() FROM numbers(100000000000) WHERE NOT ignore(sipHash64(number))"


@pytest.fixture
def limited(session_store: Store) -> Iterator[Store]:
    """A migrated database whose reads stop after 2 s, with no cap on rows read."""
    database = f"t_{uuid.uuid4().hex}"
    store = Store(session_store.client, database, embedded=True, where=session_store.where,
                  limits=QueryLimits(timeout=2, max_rows=1000, max_rows_read=10**15, max_memory=200 * 1024**2))
    store.command(f"CREATE DATABASE {database}")
    migrate(store)
    try:
        yield store
    finally:
        store.close_readers()
        session_store.command(f"DROP DATABASE IF EXISTS {database} SYNC")


@pytest.mark.parametrize("sql", [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
])
def test_table_functions_are_refused(store: Store, sql: str) -> None:
    with pytest.raises(QueryError, match="readonly mode"):
        store.readonly(sql)


def test_user_queries_run_in_the_store_database(store: Store) -> None:
    assert store.readonly("SELECT count() FROM events").rows == [[0]]
    assert store.readonly("SELECT currentDatabase()").rows == [[store.database]]


def test_limit_is_capped_and_truncation_is_reported(limited: Store) -> None:
    with pytest.raises(QueryError, match=r"limit 1001 is outside 1\.\.1000 \(CAUSELOG_QUERY_MAX_ROWS\)"):
        limited.readonly("SELECT 1", limit=1001)
    result = limited.readonly("SELECT number FROM system.numbers", limit=1000)
    assert len(result.rows) == 1000 and result.truncated
    result = limited.readonly("SELECT number FROM numbers(1000)", limit=1000)
    assert len(result.rows) == 1000 and not result.truncated


def test_time_and_memory_limits_stop_a_query(limited: Store) -> None:
    t0 = time.monotonic()
    with pytest.raises(QueryError, match=r"Timeout exceeded.*\[limit: CAUSELOG_QUERY_TIMEOUT\]"):
        limited.readonly(HEAVY)
    assert time.monotonic() - t0 < 10
    with pytest.raises(QueryError, match=r"memory limit.*CAUSELOG_QUERY_MAX_MEMORY"):
        limited.readonly("SELECT groupArray(number) FROM numbers(100000000)")


def test_rows_read_limit(store: Store) -> None:
    with pytest.raises(QueryError, match=r"max_rows_to_read.*CAUSELOG_QUERY_MAX_ROWS_READ"):
        store.readonly("SELECT count() FROM numbers(100000000000)")


def test_a_tagged_query_is_cancelled(limited: Store) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            limited.readonly(HEAVY, tag="abc123")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    limited.cancel("abc123")
    worker.join(5)
    assert not worker.is_alive() and time.monotonic() - t0 < 1.5
    assert isinstance(errors[0], QueryError) and "cancelled" in str(errors[0]).lower()


def test_writes_do_not_wait_for_a_heavy_read(limited: Store) -> None:
    from pipeline.model import decode
    from pipeline.store import EventWriter, Pending, Position

    running = threading.Thread(target=lambda: pytest.raises(QueryError, limited.readonly, HEAVY))
    running.start()
    time.sleep(0.3)
    writer = EventWriter(limited)
    waits = []
    for i in range(5):
        raw = orjson.dumps(event_dict(i))
        t0 = time.monotonic()
        writer.write([Pending(decode(raw), raw, Position("t", 0, i))])
        waits.append(time.monotonic() - t0)
    assert running.is_alive(), "the heavy read ended before the writes: the test proves nothing"
    running.join()
    assert max(waits) < 1.0, waits


def test_reader_view_reads_only(store: Store) -> None:
    view = store.reader()
    assert view.query("SELECT count() FROM events").rows == [[0]]
    with pytest.raises(StoreError, match="read-only view"):
        view.command("DROP TABLE events")
    with pytest.raises(StoreError, match="read-only view"):
        view.insert("events", [], ["id"])
    with pytest.raises(StoreError, match="readonly mode|READONLY"):
        view.query(f"INSERT INTO {store.database}.events (id) VALUES ('x')")
