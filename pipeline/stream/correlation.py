"""The worker's correlation shell: one :class:`~pipeline.correlate.partition.PartitionCorrelator`
per owned input partition, loaded from its latest snapshot the first time the partition delivers
a record, snapshotted at checkpoints, dropped when the partition is revoked.

The ordering that keeps chains exact across crashes and rebalances (see
:mod:`pipeline.correlate.partition` and :mod:`pipeline.bus.checkpoint`):

1. correlate a batch (in offset order per partition);
2. write its events, chain ids, edges and aliases to the store;
3. at a checkpoint, once every correlated batch is written: snapshot each changed partition;
4. only then commit the partition's offsets.

A crash before 3 replays from the previous snapshot and its committed offsets (identical rows;
events are deduplicated by id, chain rows collapsed by readers); a crash between 3 and 4 replays
records the snapshot already holds, which are recognised by offset and only re-written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence

from pipeline.bus.checkpoint import Checkpoints
from pipeline.correlate.config import CorrelationConfig
from pipeline.correlate.partition import Correlated, PartitionCorrelator, Scoped, correlate_batch, describe
from pipeline.errors import BusError

log = logging.getLogger("causelog.worker")


class Correlation:
    """Correlators of the partitions this worker owns. Thread-safe."""

    def __init__(self, checkpoints: Checkpoints | None, config: CorrelationConfig | None = None) -> None:
        self.checkpoints = checkpoints
        self.config = config or CorrelationConfig()
        self.correlators: dict[int, PartitionCorrelator] = {}
        self._lock = threading.RLock()
        self.restored: dict[int, int] = {}  # partition -> offset of the snapshot it started from
        self.snapshots_written = 0
        self.snapshot_bytes = 0

    def correlate(self, records: Iterable[tuple[Scoped | None, int, int]]) -> Correlated:
        """Correlate ``(event or None if rejected, partition, offset)`` records in order."""
        records = list(records)
        with self._lock:
            for partition in {p for _, p, _ in records}:
                if partition not in self.correlators:
                    self.correlators[partition] = self._load(partition)
            return correlate_batch(self.correlators, records, self.config)

    def _load(self, partition: int) -> PartitionCorrelator:
        if self.checkpoints is None:
            return PartitionCorrelator(partition, self.config)
        started = time.monotonic()
        found = self.checkpoints.load(partition)
        if found is None:
            log.info("partition %d: no correlation snapshot, starting empty", partition)
            return PartitionCorrelator(partition, self.config)
        offset, data = found
        try:
            pc = PartitionCorrelator.restore(data, self.config)
        except ValueError as exc:
            raise BusError(
                f"correlation snapshot {self.checkpoints.topic}[{partition}] at offset {offset} is unreadable: {exc}"
            ) from exc
        self.restored[partition] = pc.next_offset
        log.info("partition %d: correlation state restored at offset %d (%d bytes, %.2fs)",
                 partition, pc.next_offset, len(data), time.monotonic() - started)
        return pc

    def checkpoint(self, partitions: Sequence[int] | None = None) -> dict[int, int]:
        """Snapshot the changed correlators (of ``partitions``, default all); return for every
        such partition the offset up to which its state is durable. Call only when every
        correlated batch is written."""
        done: dict[int, int] = {}
        with self._lock:
            for p, pc in sorted(self.correlators.items()):
                if partitions is not None and p not in partitions:
                    continue
                if not pc.dirty or pc.next_offset < 0:
                    continue
                if self.checkpoints is not None:
                    data = pc.snapshot()
                    self.checkpoints.save(p, pc.next_offset, data)
                    self.snapshots_written += 1
                    self.snapshot_bytes = len(data)
                pc.dirty = False
                done[p] = pc.next_offset
        return done

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the state of partitions this worker no longer owns (the next owner loads it)."""
        with self._lock:
            for p in partitions:
                self.correlators.pop(p, None)

    def stats(self) -> list[dict[str, object]]:
        """Per owned partition: offset, scopes, live keys, chains, and the offset of the snapshot
        it was restored from (``None``: started empty)."""
        with self._lock:
            return [dict(describe(pc), restored_at=self.restored.get(p)) for p, pc in sorted(self.correlators.items())]
