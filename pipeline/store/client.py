"""Opening ClickHouse: embedded chDB on disk by default, a server when ``CLICKHOUSE_URL`` is set.

chDB allows one engine per process and one process per path, so the embedded store is opened
only by the worker; the CLI reaches it through the worker's query API.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from pipeline.errors import QueryError, StoreError
from pipeline.settings import Settings


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a query, JSON-friendly."""

    columns: list[str]
    rows: list[list[Any]]


class Store:
    """A clickhouse-connect client plus the database name, safe to share between threads.

    chDB runs one engine per process and its client is not meant for concurrent use, so every
    call is serialised by a lock; the HTTP client shares the same discipline for simplicity.
    """

    def __init__(self, client: Any, database: str, *, embedded: bool, where: str) -> None:
        self.client = client
        self.database = database
        self.embedded = embedded
        self.where = where
        self._lock = threading.Lock()
        self._reader: Any = None  # embedded only: a dedicated read-only chDB handle, see readonly()

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except ClickHouseError as exc:
                raise StoreError(f"ClickHouse ({self.where}) failed on {what}: {_first_line(exc)}") from exc

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run a statement that returns no rows (DDL, OPTIMIZE...)."""
        with self._guard(_first_line(sql)):
            return self.client.command(sql, parameters=parameters)

    def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        *,
        settings: dict[str, Any] | None = None,
    ) -> QueryResult:
        """Run a query and return all rows."""
        with self._guard(_first_line(sql)):
            result = self.client.query(sql, parameters=parameters, settings=settings)
            return QueryResult(list(result.column_names), [list(r) for r in result.result_rows])

    def columns(
        self, sql: str, parameters: dict[str, Any] | None = None, *, formats: dict[str, str] | None = None
    ) -> list[list[Any]]:
        """Run a query and return its columns (``formats``: clickhouse-connect column formats,
        e.g. ``{"envelope": "bytes"}`` to read a String as the bytes stored)."""
        with self._guard(_first_line(sql)):
            result = self.client.query(sql, parameters=parameters, column_formats=formats or {})
            cols = result.result_columns
            return [list(c) for c in cols] if cols else [[] for _ in result.column_names]

    def readonly(self, sql: str, parameters: dict[str, Any] | None = None, *, limit: int = 10000) -> QueryResult:
        """Run a user query read-only (``readonly=2``: settings may change, data and schema may not).

        At most ``limit`` rows are returned (``result_overflow_mode=break`` stops at a block
        boundary, so the rows are also cut here).
        """
        settings: dict[str, Any] = {"max_result_rows": limit, "result_overflow_mode": "break"}
        with self._lock:
            if self.embedded:
                client = self._read_client()
            else:
                client = self.client
                settings["readonly"] = 2
            try:
                result = client.query(sql, parameters=parameters, settings=settings)
            except ClickHouseError as exc:
                raise QueryError(f"query rejected: {_first_line(exc)}") from exc
            return QueryResult(list(result.column_names), [list(r) for r in result.result_rows[:limit]])

    def _read_client(self) -> Any:
        """A second chDB handle on the same engine, switched to ``readonly=2`` for good.

        chDB applies per-call settings with ``SET`` on the handle's session and restores them
        afterwards, but ``readonly`` cannot be unset once set: on the shared handle, one refused
        statement would leave it read-only and stop every later write of the worker.
        """
        if self._reader is None:
            try:
                reader = clickhouse_connect.get_client(interface="chdb", path=self.client.path)
                reader.command("SET readonly = 2")
            except ClickHouseError as exc:
                raise StoreError(f"cannot open a read-only ClickHouse handle ({self.where}): {_first_line(exc)}") from exc
            self._reader = reader
        return self._reader

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        *,
        token: str | None = None,
        column_oriented: bool = False,
    ) -> None:
        """Insert rows into ``database.table``; ``token`` makes a retried batch a no-op.

        With ``column_oriented`` the data is a list of columns instead of a list of rows.
        """
        settings: dict[str, Any] = {}
        if token:
            settings["insert_deduplication_token"] = token
            settings["deduplicate_blocks_in_dependent_materialized_views"] = 1
        n = len(rows[0]) if column_oriented and rows else len(rows)
        with self._guard(f"insert into {table} ({n} rows)"):
            self.client.insert(
                table, rows, column_names=list(columns), database=self.database, settings=settings,
                column_oriented=column_oriented,
            )

    def close(self) -> None:
        """Release the client (for chDB this releases the engine and the path)."""
        with self._lock, suppress(ClickHouseError):
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self.client.close()


def open_store(settings: Settings, *, create: bool = True) -> Store:
    """Open the configured store and make sure its database exists."""
    try:
        if settings.embedded:
            settings.chdb_path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(interface="chdb", path=str(settings.chdb_path))
            where = f"chdb:{settings.chdb_path}"
        else:
            assert settings.clickhouse_url is not None
            client = clickhouse_connect.get_client(dsn=settings.clickhouse_url)
            where = _safe_url(settings.clickhouse_url)
    except ClickHouseError as exc:
        raise StoreError(f"cannot open ClickHouse: {_first_line(exc)}") from exc
    except Exception as exc:  # chDB raises plain RuntimeError when another process holds the path
        raise StoreError(f"cannot open ClickHouse at {settings.chdb_path}: {exc}") from exc
    store = Store(client, settings.database, embedded=settings.embedded, where=where)
    if create:
        store.command(f"CREATE DATABASE IF NOT EXISTS {settings.database}")
    return store


def _safe_url(url: str) -> str:
    # Credentials must never reach logs or error messages.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _first_line(exc_or_text: object) -> str:
    text = str(exc_or_text).strip()
    return text.splitlines()[0][:300] if text else type(exc_or_text).__name__
