"""Correlation snapshots in Kafka: the topic ``<prefix>.correlation.<group>`` (compacted, one
partition per partition of ``<prefix>.changes``), like a Faust table changelog but written per
checkpoint.

Layout. A snapshot of input partition ``p`` covering offsets below ``o`` is written to partition
``p`` as ``n`` chunks with keys ``<p>:<o>:<i>`` (``i`` in ``0..n-1``) and headers ``offset``,
``chunk``, ``chunks``. Once all ``n`` are acknowledged, the chunks of the previous snapshot get
tombstones, so compaction keeps about one snapshot per partition.

Why no transaction: a snapshot is complete when all its chunks are there; a writer that dies
half-way leaves an incomplete one that readers skip. And because correlation is deterministic,
two snapshots of the same partition at the same offset are identical, so even a stale worker
(partition already moved away) writing late cannot make the state wrong; the reader takes the
complete snapshot with the highest offset.

Reading (:meth:`Checkpoints.load`) scans the partition from the end backwards in growing windows
until a complete snapshot turns up, so a restart reads about one snapshot, not the whole
history the compactor has not cleaned yet.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.bus.kafka import DeliveryTracker
from pipeline.correlate.partition import chunk
from pipeline.errors import BusError
from pipeline.settings import Settings

log = logging.getLogger("causelog.checkpoint")

CHUNK_BYTES = 768 * 1024


@dataclass
class _Snap:
    chunks: int
    parts: dict[int, bytes] = field(default_factory=dict)

    def complete(self) -> bool:
        return len(self.parts) == self.chunks


def _header(headers: list[tuple[str, bytes]] | None, name: str) -> int | None:
    for k, v in headers or ():
        if k == name:
            return int(v)
    return None


class Checkpoints:
    """Writes and reads correlation snapshots of ``settings.topic_correlation``."""

    def __init__(self, settings: Settings, producer: Producer) -> None:
        self.settings = settings
        self.topic = settings.topic_correlation
        self.producer = producer
        self._last: dict[int, tuple[int, int]] = {}  # partition -> (offset, chunks) of our last snapshot

    def save(self, partition: int, offset: int, data: bytes) -> None:
        """Write a snapshot of ``partition`` covering offsets below ``offset``; returns once Kafka
        acknowledged every chunk (then tombstones the previous one). ``BusError`` on failure."""
        pieces = chunk(data, CHUNK_BYTES)
        tracker = DeliveryTracker(self.producer)
        for i, piece in enumerate(pieces):
            headers = [("offset", str(offset).encode()), ("chunk", str(i).encode()),
                       ("chunks", str(len(pieces)).encode())]
            self._produce(tracker, partition, f"{partition}:{offset}:{i}".encode(), piece, headers)
        tracker.flush()
        prev = self._last.get(partition)
        self._last[partition] = (offset, len(pieces))
        if prev is not None and prev[0] != offset:
            # Best effort: a missed tombstone only leaves work for the next load's scan.
            tomb = DeliveryTracker(self.producer)
            for i in range(prev[1]):
                self._produce(tomb, partition, f"{partition}:{prev[0]}:{i}".encode(), None, None)
            try:
                tomb.flush()
            except BusError as exc:
                log.warning("tombstones of snapshot p%d@%d not written: %s", partition, prev[0], exc)

    def _produce(self, tracker: DeliveryTracker, partition: int, key: bytes, value: bytes | None,
                 headers: Any) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, partition=partition, headers=headers,
                                      on_delivery=tracker)
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:
                raise BusError(f"cannot write a correlation snapshot to {self.topic}[{partition}]: {exc}") from exc

    def check_partitions(self, timeout: float = 30.0) -> None:
        """Raise ``BusError`` unless the snapshot topic has a partition for every input partition
        (someone added partitions to ``changes`` after the worker group started)."""
        consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": "causelog-metadata"})
        try:
            md = consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BusError(f"cannot list topics on {self.settings.kafka_bootstrap}: {exc}") from exc
        finally:
            consumer.close()
        changes = md.topics.get(self.settings.topic_changes)
        state = md.topics.get(self.topic)
        n_in = len(changes.partitions) if changes is not None else 0
        n_state = len(state.partitions) if state is not None else 0
        if n_state < n_in:
            raise BusError(
                f"{self.topic} has {n_state} partitions but {self.settings.topic_changes} has {n_in}; "
                f"add partitions to {self.topic} (kafka-topics.sh --alter --partitions {n_in}) before starting workers"
            )

    def load(self, partition: int, timeout: float = 30.0) -> tuple[int, bytes] | None:
        """The latest complete snapshot of ``partition`` as ``(offset, bytes)``, or ``None``."""
        consumer = Consumer({
            "bootstrap.servers": self.settings.kafka_bootstrap,
            "group.id": f"{self.settings.group}-snapshot-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
        })
        try:
            tp = TopicPartition(self.topic, partition)
            try:
                lo, hi = consumer.get_watermark_offsets(tp, timeout=timeout)
            except KafkaException as exc:
                raise BusError(f"cannot read {self.topic}[{partition}] on {self.settings.kafka_bootstrap}: {exc}") from exc
            window = 64
            while True:
                start = max(lo, hi - window)
                found = self._scan(consumer, partition, start, hi, timeout)
                if found is not None or start <= lo:
                    self._last.setdefault(partition, (found[0], found[2]) if found else (-1, 0))
                    return None if found is None else (found[0], found[1])
                window *= 8
        finally:
            consumer.close()

    def _scan(self, consumer: Consumer, partition: int, start: int, end: int,
              timeout: float) -> tuple[int, bytes, int] | None:
        """Latest complete snapshot among records ``[start, end)``: (offset, bytes, chunks)."""
        if end <= start:
            return None
        consumer.assign([TopicPartition(self.topic, partition, start)])
        snaps: dict[int, _Snap] = {}
        dead: set[int] = set()
        position = start
        deadline = time.monotonic() + timeout
        while position < end:
            # consume() waits its whole timeout unless the batch fills: ask often, for little.
            msgs = consumer.consume(1000, 0.1)
            if not msgs and time.monotonic() > deadline:
                raise BusError(f"reading {self.topic}[{partition}]@{position}: no data within {timeout:.0f}s")
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        position = end
                        break
                    raise BusError(f"reading {self.topic}[{partition}]: {err}")
                position = m.offset() + 1  # type: ignore[operator]
                key = (m.key() or b"").decode(errors="replace")
                parts = key.split(":")
                if len(parts) != 3:
                    log.warning("ignoring record with key %r at %s[%d]@%s", key, self.topic, partition, m.offset())
                    continue
                offset, index = int(parts[1]), int(parts[2])
                value = m.value()
                if value is None:  # tombstone: that snapshot was replaced
                    dead.add(offset)
                    continue
                chunks = _header(m.headers(), "chunks")  # type: ignore[arg-type]
                if chunks is None:
                    continue
                snap = snaps.get(offset)
                if snap is None or snap.chunks != chunks:
                    snap = snaps[offset] = _Snap(chunks)
                snap.parts[index] = value
        consumer.unassign()
        for offset in sorted(snaps, reverse=True):
            snap = snaps[offset]
            if snap.complete() and offset not in dead:
                return offset, b"".join(snap.parts[i] for i in range(snap.chunks)), snap.chunks
        return None

