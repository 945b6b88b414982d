"""Store fixtures for unit tests: one embedded chDB engine per test process, one database per test.

chDB runs one engine per process and binds it to one path, so the whole session shares a single
client opened on a temporary ``CAUSELOG_HOME``. Each test gets a :class:`Store` on that client
with a database of its own (``t_<uuid hex>``), dropped when the test ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.settings import load
from pipeline.store import Store, migrate, open_store


@pytest.fixture(scope="session")
def session_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The process-wide chDB store (database ``causelog_unit``), closed at the end of the session."""
    home: Path = tmp_path_factory.mktemp("causelog-home")
    store = open_store(load({"CAUSELOG_HOME": str(home), "CAUSELOG_DATABASE": "causelog_unit"}))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def empty_store(session_store: Store) -> Iterator[Store]:
    """A Store on a fresh, empty database of its own (no migrations applied)."""
    database = f"t_{uuid.uuid4().hex}"
    store = Store(session_store.client, database, embedded=True, where=session_store.where)
    store.command(f"CREATE DATABASE {database}")
    try:
        yield store
    finally:
        # Never store.close(): that would close the shared client. Only the read handles the
        # Store may have opened are its own.
        store.close_readers()
        session_store.command(f"DROP DATABASE IF EXISTS {database} SYNC")


@pytest.fixture
def store(empty_store: Store) -> Store:
    """A Store on a fresh database with every migration of schemas/clickhouse applied."""
    migrate(empty_store)
    return empty_store
