"""The worker's correlation shell: one :class:`~pipeline.correlate.partition.PartitionCorrelator`
per owned input partition, rebuilt from its changelog the first time the partition delivers a
record, checkpointed to the changelog, dropped when the partition is revoked.

The ordering that keeps chains exact across crashes and rebalances (see
:mod:`pipeline.correlate.partition` and :mod:`pipeline.bus.checkpoint`):

1. correlate a batch (in offset order per partition);
2. write its events, chain ids, edges and aliases to the store;
3. at a checkpoint, once every correlated batch is written: one Kafka transaction holds the
   changelog records of what each partition's state changed *and* the consumer offsets.

A crash before 3 commits replays from the previous checkpoint, state and offsets together
(identical rows: events are deduplicated by id, chain rows collapsed by readers). In agent mode
Faust commits the offsets itself, after the changelog: records the changelog already covers are
recognised by offset and only re-written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from pipeline.bus.checkpoint import Changelog
from pipeline.correlate.config import CorrelationConfig
from pipeline.correlate.partition import (
    ChangelogRecord,
    Correlated,
    PartitionCorrelator,
    Scoped,
    correlate_batch,
    describe,
)
from pipeline.errors import BusError, IntegrityError
from pipeline.integrity.log import PartitionLog, split_changelog

log = logging.getLogger("causelog.worker")


class Correlation:
    """Correlators of the partitions this worker owns. Thread-safe."""

    def __init__(self, changelog: Changelog | None, config: CorrelationConfig | None = None) -> None:
        self.changelog = changelog
        self.config = config or CorrelationConfig()
        self.correlators: dict[int, PartitionCorrelator] = {}
        # The integrity log of each owned partition (pipeline.integrity.log): it travels in the
        # same changelog, so it is restored and committed together with the correlation state.
        self.logs: dict[int, PartitionLog] = {}
        self._lock = threading.RLock()
        self.restored: dict[int, int] = {}  # partition -> offset its restored state covered
        self.loading: int | None = None  # the partition whose changelog is being read, if any

    def correlate(
        self,
        records: Iterable[tuple[Scoped | None, int, int]],
        on_error: Callable[[int, int, Exception], None] | None = None,
    ) -> Correlated:
        """Correlate ``(event or None if rejected, partition, offset)`` records in order
        (``on_error``: see :func:`~pipeline.correlate.partition.correlate_batch`)."""
        records = list(records)
        with self._lock:
            for partition in {p for _, p, _ in records}:
                if partition not in self.correlators:
                    self.correlators[partition] = self._load(partition)
            return correlate_batch(self.correlators, records, self.config, on_error)

    def _load(self, partition: int) -> PartitionCorrelator:
        if self.changelog is None:
            self.logs[partition] = PartitionLog(partition)
            return PartitionCorrelator(partition, self.config)
        started = time.monotonic()
        self.loading = partition
        try:
            records = self.changelog.load(partition)
        finally:
            self.loading = None
        try:
            records, self.logs[partition] = split_changelog(partition, records)
            pc = PartitionCorrelator.from_changelog(partition, records, self.config)
        except (ValueError, IntegrityError) as exc:
            raise BusError(f"correlation changelog {self.changelog.topic}[{partition}] is unreadable: {exc}") from exc
        if pc.next_offset >= 0:
            self.restored[partition] = pc.next_offset
        log.info("partition %d: correlation state restored at offset %d from %d records (%.2fs)",
                 partition, pc.next_offset, len(records), time.monotonic() - started)
        return pc

    def collect(self, partitions: Iterable[int] | None = None) -> dict[int, list[ChangelogRecord]]:
        """The changelog records of the owned partitions (of ``partitions``, default all) since
        the previous call. Call only when every correlated batch is written."""
        wanted = None if partitions is None else set(partitions)
        out: dict[int, list[ChangelogRecord]] = {}
        with self._lock:
            for p, pc in sorted(self.correlators.items()):
                if wanted is not None and p not in wanted:
                    continue
                recs = pc.changelog()
                log = self.logs.get(p)
                if log is not None:
                    recs.extend(log.take_changes())
                if recs:
                    out[p] = recs
        return out

    def checkpoint(self, chains: dict[int, list[tuple[bytes, bytes]]] | None = None) -> int:
        """Agent mode: write the changelog of every owned partition now, with the ``chains``
        records of the batch just stored (no offsets: Faust commits those after, so a crash in
        between repeats them: at least once). Returns the changelog records written."""
        records = self.collect()
        if self.changelog is None or not (records or chains):
            return 0
        return self.changelog.commit(records, chains=chains)

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the state of partitions this worker no longer owns (the next owner loads it)."""
        with self._lock:
            for p in partitions:
                self.correlators.pop(p, None)
                self.logs.pop(p, None)

    def log_snapshot(self) -> dict[int, PartitionLog]:
        """The integrity logs of the owned partitions, for a write to extend (it copies them)."""
        with self._lock:
            return dict(self.logs)

    def install_logs(self, logs: dict[int, PartitionLog]) -> None:
        """Install the logs a write produced, once its rows are stored."""
        with self._lock:
            for p, log in logs.items():
                if p in self.correlators:  # not revoked in the meantime
                    self.logs[p] = log

    def log_heads(self, partitions: Iterable[int] | None = None) -> dict[int, tuple[int, bytes]]:
        """``(size, root)`` of each owned log (of ``partitions``, default all)."""
        wanted = None if partitions is None else set(partitions)
        with self._lock:
            return {p: (log.size, log.root()) for p, log in sorted(self.logs.items())
                    if wanted is None or p in wanted}

    def stats(self) -> list[dict[str, object]]:
        """Per owned partition: offset, scopes, live keys, chains, and the offset of the changelog
        it was restored from (``None``: started empty)."""
        with self._lock:
            return [dict(describe(pc), restored_at=self.restored.get(p)) for p, pc in sorted(self.correlators.items())]
