"""ClickHouse store: client, migrations, batching writer and named queries."""

from pipeline.store.client import QueryResult, Store, open_store
from pipeline.store.migrations import migrate
from pipeline.store.writer import EventWriter, Pending, Position, WriteResult

__all__ = ["EventWriter", "Pending", "Position", "QueryResult", "Store", "WriteResult", "migrate", "open_store"]
