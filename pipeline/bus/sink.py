"""Kafka sink for sources: transactional, with the cursor stored in Kafka itself.

Each unit of work (a chunk of records) is one Kafka transaction holding the events, the DLQ
records and the source's cursor (a record keyed by the source instance in the compacted
``<prefix>.cursors`` topic). Either all of it becomes visible or none of it, so a source killed
mid-backfill and restarted neither loses nor repeats an event in Kafka. The transactional id is
derived from the source instance: a restarted source fences its zombie predecessor.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from pipeline.bus.kafka import TOPIC_MAX_MESSAGE_BYTES
from pipeline.errors import BusError
from pipeline.settings import Settings


class KafkaSink:
    """A :class:`pipeline.sources.runner.Sink` over a transactional confluent-kafka producer."""

    def __init__(self, settings: Settings, instance: str, *, timeout: float = 60.0) -> None:
        self.settings = settings
        self.instance = instance
        self.timeout = timeout
        self.cursor_topic = settings.topic_cursors
        tid = "causelog-src-" + hashlib.sha256(f"{settings.topic_prefix}/{instance}".encode()).hexdigest()[:24]
        self.producer = Producer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "transactional.id": tid,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.max.bytes": TOPIC_MAX_MESSAGE_BYTES,
            "transaction.timeout.ms": 120000,
        })
        try:
            self.producer.init_transactions(timeout)
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise BusError(f"cannot start a Kafka transaction for source {instance!r}: {exc}") from exc
        self._failed: list[str] = []

    def _on_delivery(self, err: object, msg: object) -> None:
        if err is not None:
            self._failed.append(str(err))

    def send(self, topic: str, value: bytes, key: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Queue a record in the open transaction (waits when the local queue is full)."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=self._on_delivery)
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:
                raise BusError(f"cannot produce to {topic}: {exc}") from exc

    def commit(self, cursor: bytes) -> None:
        """Add the cursor record and commit the transaction; open the next one."""
        self.send(self.cursor_topic, cursor, self.instance.encode())
        try:
            self.producer.commit_transaction(self.timeout)
        except KafkaException as exc:
            raise BusError(f"Kafka refused the commit of source {self.instance!r}: {exc}") from exc
        if self._failed:
            raise BusError(f"{len(self._failed)} records of source {self.instance!r} failed: {self._failed[0]}")
        self.producer.begin_transaction()

    def last_cursor(self) -> bytes | None:
        """Read the cursors topic to its end (committed records only); last value for this instance."""
        consumer = Consumer({
            "bootstrap.servers": self.settings.kafka_bootstrap,
            "group.id": "causelog-cursor-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        })
        found: bytes | None = None
        key = self.instance.encode()
        try:
            md = consumer.list_topics(self.cursor_topic, timeout=self.timeout)
            if md.topics[self.cursor_topic].error is not None:
                raise BusError(f"topic {self.cursor_topic} is missing: run `causelog up` (it creates the topics)")
            parts = [TopicPartition(self.cursor_topic, p, 0) for p in md.topics[self.cursor_topic].partitions]
            ends = {}
            for tp in parts:
                _, high = consumer.get_watermark_offsets(tp, timeout=self.timeout)
                if high > 0:
                    ends[tp.partition] = high
            if not ends:
                return None
            consumer.assign([tp for tp in parts if tp.partition in ends])
            while ends:
                msg = consumer.poll(1.0)
                if msg is None:
                    # Transaction markers occupy offsets but are never delivered: check positions.
                    for tp in consumer.position([TopicPartition(self.cursor_topic, p) for p in list(ends)]):
                        if tp.offset >= ends.get(tp.partition, 0):  # type: ignore[arg-type]
                            ends.pop(tp.partition, None)  # type: ignore[arg-type]
                    continue
                if msg.error():
                    continue
                if msg.key() == key:
                    found = msg.value()
                part, off = msg.partition() or 0, msg.offset() or 0
                if off + 1 >= ends.get(part, 0):
                    ends.pop(part, None)
            return found
        except KafkaException as exc:
            raise BusError(f"cannot read source cursors from {self.cursor_topic}: {exc}") from exc
        finally:
            consumer.close()

    def close(self) -> None:
        """Abort whatever is open (nothing half-done becomes visible)."""
        with contextlib.suppress(KafkaException):
            self.producer.abort_transaction(10)
