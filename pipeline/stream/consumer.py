"""The worker's ingest loop: a confluent-kafka consumer that takes records in batches.

Why not a Faust agent: Faust hands records to agents one at a time through its event loop
(two tasks and an ``asyncio.wait`` per record); measured here it tops out near 3k events/s, a
fifth of a plain consumer, whatever the batch size (see README, Performance). This loop keeps
Faust's role (worker process, services, web API) and takes whole batches from librdkafka.

Guarantees: offsets are committed synchronously, per partition, only after the batch handler
returned (rejections acknowledged on the DLQ, events stored). If a batch cannot be completed the
process exits at once without committing, so a restart re-reads it and the store's id dedup
keeps one copy. Rebalances happen inside ``consume()``, between batches, so no batch is ever in
flight when partitions move. ``isolation.level=read_committed`` hides records of aborted source
transactions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.errors import BusError
from pipeline.settings import Settings
from pipeline.store.writer import Position
from pipeline.stream.ingest import Record

log = logging.getLogger("causelog.worker")

# EX_TEMPFAIL: the batch is not committed; a restart re-reads it.
EXIT_BATCH_FAILED = 75


def consumer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of the ingest consumer."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": settings.group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # A killed worker's partitions move to the others after this long.
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 2000,
        # A batch may wait on a slow store (backpressure): allow it before being evicted.
        "max.poll.interval.ms": 600000,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
        "partition.assignment.strategy": "cooperative-sticky",
    }


class BatchConsumer:
    """Consume ``settings.topic_changes`` in batches on a thread, hand each to ``handle``."""

    def __init__(
        self,
        settings: Settings,
        handle: Callable[[Sequence[Record]], object],
        *,
        abort: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.handle = handle
        self.abort = abort or _exit_now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="causelog-ingest", daemon=True)
        self.assigned: set[int] = set()

    def start(self) -> None:
        """Start consuming in the background."""
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        s = self.settings
        try:
            consumer = Consumer(consumer_config(s))
            consumer.subscribe([s.topic_changes], on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_revoke)
        except KafkaException as exc:
            self.abort(f"cannot subscribe to {s.topic_changes} on {s.kafka_bootstrap}: {exc}")
            return
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(s.batch_size, s.batch_within)
                if not msgs:
                    continue
                records: list[Record] = []
                for m in msgs:
                    err = m.error()
                    if err is None:
                        records.append(Record(m.value(), Position(m.topic(), m.partition(), m.offset())))  # type: ignore[arg-type]
                    elif err.fatal():
                        raise BusError(f"fatal Kafka error on {m.topic()}[{m.partition()}]: {err}")
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.warning("Kafka reported %s on %s[%s]", err, m.topic(), m.partition())
                if not records:
                    continue
                try:
                    self.handle(records)
                except BaseException as exc:  # anything: the batch must not be committed
                    self.abort(f"batch of {len(records)} records from {records[0].position} failed: {exc!r}")
                    return
                consumer.commit(offsets=next_offsets(records), asynchronous=False)
        except (KafkaException, BusError) as exc:
            self.abort(f"Kafka consumer failed: {exc}")
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {p.partition for p in partitions}
        log.info("assigned %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned -= {p.partition for p in partitions}
        log.info("revoked %s", sorted(p.partition for p in partitions))


def next_offsets(records: Sequence[Record]) -> list[TopicPartition]:
    """The offsets to commit after ``records``: last offset + 1 per topic-partition."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.position.topic, r.position.partition)
        if r.position.offset >= last.get(key, -1):
            last[key] = r.position.offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]


def _exit_now(reason: str) -> None:
    log.critical("%s; stopping without committing", reason)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)
