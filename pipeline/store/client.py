"""Opening ClickHouse: embedded chDB on disk by default, a server when ``CLICKHOUSE_URL`` is set.

chDB allows one engine per process and one process per path, so the embedded store is opened
only by the worker; the CLI reaches it through the worker's query API.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from pipeline.errors import QueryError, StoreError
from pipeline.settings import Settings
from pipeline.store import usersql
from pipeline.store.cluster import INSERT_SETTINGS, QUERY_SETTINGS, Cluster


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a query, JSON-friendly; ``truncated`` when rows were left out."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False


@dataclass(frozen=True)
class QueryLimits:
    """What one read may cost, fixed by ClickHouse settings before the reader's SQL runs."""

    timeout: float = 30.0
    max_rows: int = 100_000
    max_rows_read: int = 1_000_000_000
    max_memory: int = 2 * 1024**3

    @classmethod
    def of(cls, settings: Settings) -> QueryLimits:
        """The limits configured by ``CAUSELOG_QUERY_*``."""
        return cls(settings.query_timeout, settings.query_max_rows, settings.query_max_rows_read,
                   settings.query_max_memory)

    def clickhouse(self, *, result_cap: bool) -> dict[str, Any]:
        """The ClickHouse settings, ``readonly=1`` last (it forbids changing any other afterwards)."""
        out: dict[str, Any] = {
            "max_execution_time": max(1, round(self.timeout)),
            "timeout_overflow_mode": "throw",
            "max_rows_to_read": self.max_rows_read,
            "read_overflow_mode": "throw",
            "max_memory_usage": self.max_memory,
        }
        if result_cap:
            # ``break`` stops at a block boundary past the cap; the rows are cut to the limit here.
            out |= {"max_result_rows": self.max_rows, "result_overflow_mode": "break"}
        return out | {"readonly": 1}


class _Pool:
    """Idle read handles, opened on demand: each thread running a read takes one for itself."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def take(self) -> Iterator[Any]:
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._opener()
        try:
            yield client
        finally:
            with self._lock:
                if self._closed:
                    with suppress(Exception):
                        client.close()
                else:
                    self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client in idle:
            with suppress(Exception):
                client.close()


class Store:
    """A clickhouse-connect client plus the database name, safe to share between threads.

    Writes (and the worker's own queries) go through :attr:`client`, serialised by one lock:
    chDB's client is not meant for concurrent use. Reads never take that lock: user queries
    (:meth:`readonly`) and the API's named queries (:meth:`reader`) run on handles of their own
    (chDB allows several handles on its one engine, and they run concurrently), each switched to
    ``readonly=1`` with the limits of :class:`QueryLimits` set once, before any reader SQL.

    With ``cluster`` (server mode, ``CAUSELOG_CLICKHOUSE_CLUSTER``) the tables are Distributed
    tables over replicated ``<table>_local`` tables: DDL goes through :meth:`ddl`, inserts and
    queries carry the settings of :mod:`pipeline.store.cluster`.
    """

    def __init__(
        self, client: Any, database: str, *, embedded: bool, where: str,
        limits: QueryLimits | None = None, dsn: str | None = None, cluster: Cluster | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.cluster = cluster
        self.embedded = embedded
        self.where = where
        self.limits = limits or QueryLimits()
        self._dsn = dsn
        self._lock = threading.Lock()
        self._users = _Pool(lambda: self._open_reader(result_cap=True))
        self._named = _Pool(lambda: self._open_reader(result_cap=False))
        self._control: Any = None
        self._control_lock = threading.Lock()

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except ClickHouseError as exc:
                raise StoreError(f"ClickHouse ({self.where}) failed on {what}: {_first_line(exc)}") from exc

    def command(
        self, sql: str, parameters: dict[str, Any] | None = None, *, settings: dict[str, Any] | None = None,
    ) -> Any:
        """Run a statement that returns no rows (DDL, OPTIMIZE...) as it is (see :meth:`ddl`)."""
        with self._guard(_first_line(sql)):
            if settings:
                return self.client.command(sql, parameters=parameters, settings=settings)
            return self.client.command(sql, parameters=parameters)

    def ddl(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement naming causelog's tables (CREATE, ALTER, DROP, a backfill INSERT...):
        as it is on one engine, as its cluster rewrite on a cluster (ON CLUSTER, ``_local`` tables)."""
        if self.cluster is None:
            self.command(sql, parameters)
            return
        for statement in self.cluster.statements(sql, self.database):
            insert = statement.lstrip().upper().startswith("INSERT")
            self.command(statement, parameters, settings=INSERT_SETTINGS if insert else None)

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

    def reader(self) -> Store:
        """A view of this store for the API's named queries: same database, read handles only."""
        return _ReadView(self)

    def columns(
        self, sql: str, parameters: dict[str, Any] | None = None, *, formats: dict[str, str] | None = None
    ) -> list[list[Any]]:
        """Run a query and return its columns (``formats``: clickhouse-connect column formats,
        e.g. ``{"envelope": "bytes"}`` to read a String as the bytes stored)."""
        with self._guard(_first_line(sql)):
            result = self.client.query(sql, parameters=parameters, column_formats=formats or {})
            cols = result.result_columns
            return [list(c) for c in cols] if cols else [[] for _ in result.column_names]

    def readonly(
        self, sql: str, parameters: dict[str, Any] | None = None, *, limit: int | None = None,
        tag: str | None = None,
    ) -> QueryResult:
        """Run a user query: one SELECT/WITH/SHOW/DESCRIBE/EXPLAIN statement, ``readonly=1``, limited.

        At most ``limit`` rows are returned (default 10000, ``truncated`` says when there were
        more); ``limit`` may not exceed ``limits.max_rows``. ``tag`` names the query for :meth:`cancel`.
        Refusals, limits hit and cancellations raise :class:`QueryError`.
        """
        if limit is None:
            limit = min(10000, self.limits.max_rows)
        if not 1 <= limit <= self.limits.max_rows:
            raise QueryError(f"query rejected: limit {limit} is outside 1..{self.limits.max_rows} "
                             "(CAUSELOG_QUERY_MAX_ROWS)")
        statement = usersql.check(sql)
        if tag is not None:
            # The marker lets cancel() find this very query in system.processes.
            statement = f"{_marker(tag)}\n{statement}"
        with self._users.take() as client:
            try:
                result = client.query(statement, parameters=parameters)
                rows = result.result_rows
            except ClickHouseError as exc:
                raise QueryError(f"query rejected: {_first_line(exc)}{_which_limit(exc)}") from exc
        return QueryResult(list(result.column_names), [list(r) for r in rows[:limit]], len(rows) > limit)

    def cancel(self, tag: str) -> None:
        """Stop the running user query tagged ``tag`` (its client went away); no-op when it ended."""
        # On a cluster the query may run on any node behind CLICKHOUSE_URL, not the one this
        # connection reaches.
        on = f" {self.cluster.on}" if self.cluster is not None else ""
        sql = f"KILL QUERY{on} WHERE startsWith(query, '{_marker(tag)}') ASYNC"
        with self._control_lock:
            try:
                if self._control is None:
                    self._control = self._open(database=None)
                self._control.command(sql)
            except ClickHouseError as exc:
                raise StoreError(f"cannot cancel query {tag} ({self.where}): {_first_line(exc)}") from exc

    def _open(self, database: str | None) -> Any:
        """Another client on the same store: a chDB handle on the same engine, or an HTTP client."""
        if self.embedded:
            return clickhouse_connect.get_client(interface="chdb", path=self.client.path, database=database)
        if self._dsn is None:
            raise StoreError(f"no second connection to {self.where} is possible (the store was opened without a URL)")
        return clickhouse_connect.get_client(dsn=self._dsn, database=database, settings=self._query_settings() or None)

    def _open_reader(self, *, result_cap: bool) -> Any:
        """A read handle bound to the database, with the limits and ``readonly=1`` set for good.

        On chDB the settings are ``SET`` on the handle's session; ``readonly=1`` comes last and
        also forbids changing any of them again (a ``SETTINGS`` clause or ``SET`` is refused). A
        server gets them as client settings sent with every request, ``readonly`` included.
        """
        wanted = self.limits.clickhouse(result_cap=result_cap)
        try:
            if not self.embedded and self._dsn is not None:
                # A server stops a read-only HTTP query whose client hung up only when asked to.
                wanted = {"cancel_http_readonly_queries_on_client_close": 1, **self._query_settings(), **wanted}
                return clickhouse_connect.get_client(dsn=self._dsn, database=self.database, settings=wanted)
            client = self._open(self.database)
            for name, value in wanted.items():
                client.command(f"SET {name} = {value!r}" if isinstance(value, str) else f"SET {name} = {value}")
            return client
        except ClickHouseError as exc:
            raise StoreError(f"cannot open a read-only ClickHouse handle ({self.where}): {_first_line(exc)}") from exc

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        *,
        token: str | None = None,
        column_oriented: bool = False,
        column_types: Sequence[str] | None = None,
    ) -> None:
        """Insert rows into ``database.table``; ``token`` makes a retried batch a no-op.

        With ``column_oriented`` the data is a list of columns instead of a list of rows.
        ``column_types``: the types to send the columns as (ClickHouse converts them to the
        table's), instead of asking the table; see :data:`pipeline.store.writer.EVENT_SEND_TYPES`.
        """
        settings: dict[str, Any] = dict(INSERT_SETTINGS) if self.cluster is not None else {}
        if token:
            settings["insert_deduplication_token"] = token
            settings["deduplicate_blocks_in_dependent_materialized_views"] = 1
        n = len(rows[0]) if column_oriented and rows else len(rows)
        with self._guard(f"insert into {table} ({n} rows)"):
            self.client.insert(
                table, rows, column_names=list(columns), database=self.database, settings=settings,
                column_oriented=column_oriented, column_type_names=column_types,
            )

    def _query_settings(self) -> dict[str, Any]:
        """Settings every connection to a cluster sends (none on one engine)."""
        return dict(QUERY_SETTINGS) if self.cluster is not None else {}

    def close_readers(self) -> None:
        """Close the read handles this Store opened (not the writer's client)."""
        self._users.close()
        self._named.close()
        with self._control_lock, suppress(ClickHouseError):
            if self._control is not None:
                self._control.close()
                self._control = None

    def close(self) -> None:
        """Release the client (for chDB this releases the engine and the path)."""
        self.close_readers()
        with self._lock, suppress(ClickHouseError):
            self.client.close()


class _ReadView(Store):
    """:meth:`Store.reader`: queries on the parent's read handles, never under the writer's lock."""

    def __init__(self, parent: Store) -> None:  # shares the parent's handles and settings
        self.__dict__.update(parent.__dict__)
        self._parent = parent

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, *, settings: dict[str, Any] | None = None,
    ) -> QueryResult:
        """Run a named query on a read handle (``settings`` cannot change: the handle is read-only)."""
        if settings:
            raise StoreError(f"a read-only view cannot change settings ({sorted(settings)})")
        with self._parent._named.take() as client:
            try:
                result = client.query(sql, parameters=parameters)
                return QueryResult(list(result.column_names), [list(r) for r in result.result_rows])
            except ClickHouseError as exc:
                raise StoreError(f"ClickHouse ({self.where}) failed on {_first_line(sql)}: {_first_line(exc)}") from exc

    def columns(
        self, sql: str, parameters: dict[str, Any] | None = None, *, formats: dict[str, str] | None = None
    ) -> list[list[Any]]:
        """Like :meth:`Store.columns`, on a read handle."""
        with self._parent._named.take() as client:
            try:
                result = client.query(sql, parameters=parameters, column_formats=formats or {})
            except ClickHouseError as exc:
                raise StoreError(f"ClickHouse ({self.where}) failed on {_first_line(sql)}: {_first_line(exc)}") from exc
            cols = result.result_columns
            return [list(c) for c in cols] if cols else [[] for _ in result.column_names]

    def command(
        self, sql: str, parameters: dict[str, Any] | None = None, *, settings: dict[str, Any] | None = None,
    ) -> Any:
        """Refused: the view only reads."""
        raise StoreError(f"a read-only view cannot run {_first_line(sql)!r}")

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], *,
        token: str | None = None, column_oriented: bool = False, column_types: Sequence[str] | None = None,
    ) -> None:
        """Refused: the view only reads."""
        raise StoreError(f"a read-only view cannot insert into {table}")

    def close(self) -> None:
        """Nothing: the handles belong to the parent store."""


_LIMIT_HINTS = {
    "TIMEOUT_EXCEEDED": " [limit: CAUSELOG_QUERY_TIMEOUT]",
    "TOO_MANY_ROWS": " [limit: CAUSELOG_QUERY_MAX_ROWS_READ]",
    "MEMORY_LIMIT_EXCEEDED": " [limit: CAUSELOG_QUERY_MAX_MEMORY]",
    "QUERY_WAS_CANCELLED": " [cancelled: the client went away]",
}


def _which_limit(exc: ClickHouseError) -> str:
    """Names the causelog setting behind a ClickHouse limit error, so the user knows what to raise."""
    text = str(exc)
    return next((hint for name, hint in _LIMIT_HINTS.items() if f"({name})" in text), "")


def _marker(tag: str) -> str:
    if not tag.isalnum():
        raise ValueError(f"query tag {tag!r} must be alphanumeric")
    return f"/* causelog-query:{tag} */"


def open_store(settings: Settings, *, create: bool = True) -> Store:
    """Open the configured store and make sure its database exists (on every node of the
    cluster, with ``CAUSELOG_CLICKHOUSE_CLUSTER``)."""
    cluster = (Cluster(settings.clickhouse_cluster, settings.clickhouse_zk_path)
               if settings.clickhouse_cluster and not settings.embedded else None)
    if settings.embedded:
        _check_not_locked(settings)  # before chDB prints its own raw complaint to stderr
    try:
        if settings.embedded:
            settings.chdb_path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(interface="chdb", path=str(settings.chdb_path))
            where = f"chdb:{settings.chdb_path}"
        elif cluster is not None:
            assert settings.clickhouse_url is not None
            client = clickhouse_connect.get_client(dsn=settings.clickhouse_url, settings=dict(QUERY_SETTINGS))
            where = f"{_safe_url(settings.clickhouse_url)} (cluster {cluster.name})"
        else:
            assert settings.clickhouse_url is not None
            client = clickhouse_connect.get_client(dsn=settings.clickhouse_url)
            where = _safe_url(settings.clickhouse_url)
    except Exception as exc:  # chDB raises plain RuntimeError too
        if settings.embedded:
            # chDB says only "Error initializing EmbeddedServer" when another process holds the
            # path (it started between the check above and the open): check again to say why.
            _check_not_locked(settings)
            raise StoreError(f"cannot open the embedded store at {settings.chdb_path}: {_first_line(exc)}") from exc
        if isinstance(exc, ClickHouseError):
            raise StoreError(f"cannot open ClickHouse: {_first_line(exc)}") from exc
        raise
    store = Store(client, settings.database, embedded=settings.embedded, where=where,
                  limits=QueryLimits.of(settings), dsn=settings.clickhouse_url, cluster=cluster)
    if create:
        on = f" {cluster.on}" if cluster is not None else ""
        store.command(f"CREATE DATABASE IF NOT EXISTS {settings.database}{on}")
    return store


def _check_not_locked(settings: Settings) -> None:
    """Raise a one-line StoreError when another process holds the embedded engine at
    ``settings.chdb_path`` (a second worker on the same CAUSELOG_HOME)."""
    pid = engine_holder(settings.chdb_path)
    if pid is not None:
        raise StoreError(
            f"the embedded store {settings.chdb_path} is already in use by another causelog worker "
            f"(or process, pid {pid}); stop it, or give this one its own CAUSELOG_HOME "
            f"(now {settings.home})"
        )


def engine_holder(path: Path, locks: Path = Path("/proc/locks")) -> int | None:
    """The id of another process holding chDB's lock on ``path`` (the ``flock`` of its ``status``
    file, as listed in ``/proc/locks``), or None: free, held by this process (a second handle
    on the same engine), or not knowable on this system."""
    try:
        st = (path / "status").stat()
        table = locks.read_text()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 21320 fe:00:10543153 0 EOF" (a blocked waiter adds "->")
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5] == device and fields[4].isdigit() and int(fields[4]) != os.getpid():
            return int(fields[4])
    return None


def _safe_url(url: str) -> str:
    # Credentials must never reach logs or error messages.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _first_line(exc_or_text: object) -> str:
    text = str(exc_or_text).strip()
    return text.splitlines()[0][:300] if text else type(exc_or_text).__name__
