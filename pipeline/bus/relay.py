"""Kafka to Kafka, exactly once: the consume-transform-produce loop of sources whose input is Kafka.

:func:`relay` reads input topics with a ``read_committed`` consumer and, for each batch of
records, produces the envelopes (to ``<prefix>.changes``, keyed by scope) and the rejected
records (to ``<prefix>.dlq``) *and* commits the consumer group's offsets in one Kafka
transaction (``send_offsets_to_transaction``). Either the events of a batch and the input
position after it become visible together, or neither does: a relay killed at any point and
started again resumes after the last committed batch, nothing lost and nothing twice.

Partitions are assigned explicitly (all partitions of the input topics, from the group's
committed offsets, else the beginning), not through a group rebalance. The transactional id is
derived from the topic prefix, the group and the sorted input topics, so a restarted relay
fences a zombie predecessor; consequently **one relay process per group and topic set** (run it
under a supervisor for availability, not several copies for scale).

Errors: a transaction Kafka reports as abortable (or a retriable error) is aborted, the consumer
is sought back to the last committed offsets and the batch is read again (a few times); any
other Kafka failure aborts what is open and raises :class:`~pipeline.errors.BusError`, so the
CLI exits non-zero and a supervisor restarts it from the committed offsets. Only
:class:`~pipeline.errors.DecodeError` from ``convert`` sends a record to the DLQ; any other
exception is a bug and stops the relay (after aborting the open transaction).

The DLQ record holds the input value verbatim, key ``<kind>:<topic>[<partition>]@<offset>`` and
the headers of :meth:`DecodeError.dlq_headers` (``origin`` = the key, ``source`` = ``kind``),
like the file sources.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.bus.kafka import TOPIC_MAX_MESSAGE_BYTES
from pipeline.errors import BusError, DecodeError
from pipeline.model import Event, encode, with_observed_time
from pipeline.settings import Settings
from pipeline.sources.runner import Report

#: ``convert(value, topic, partition, offset, key) -> events``; raise DecodeError to reject.
Convert = Callable[[bytes | None, str, int, int, bytes | None], list[Event]]

_RETRIES = 3


def transactional_id(settings: Settings, group: str, topics: Sequence[str]) -> str:
    """The producer's transactional id: stable for (prefix, group, topic set)."""
    ident = f"{settings.topic_prefix}/{group}/{','.join(sorted(set(topics)))}"
    return "causelog-relay-" + hashlib.sha256(ident.encode()).hexdigest()[:24]


def _retriable(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError) or err.fatal():
        return False
    return bool(err.txn_requires_abort() or err.retriable())


class _Relay:
    def __init__(self, settings: Settings, topics: Sequence[str], group: str, *, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self.topics = sorted(set(topics))
        self.producer = Producer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "transactional.id": transactional_id(settings, group, self.topics),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.max.bytes": TOPIC_MAX_MESSAGE_BYTES,
            "transaction.timeout.ms": 120000,
        })
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        })
        self.failed: list[str] = []
        self.in_txn = False

    def on_delivery(self, err: object, msg: object) -> None:
        if err is not None:
            self.failed.append(str(err))

    def partitions(self) -> list[TopicPartition]:
        md = self.consumer.list_topics(timeout=self.timeout)
        parts: list[TopicPartition] = []
        for topic in self.topics:
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise BusError(f"input topic {topic} does not exist on {self.settings.kafka_bootstrap}")
            parts.extend(TopicPartition(topic, p) for p in sorted(meta.partitions))
        return parts

    def send(self, topic: str, value: bytes, key: bytes, headers: Any = None) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self.on_delivery)
                return
            except BufferError:
                self.producer.poll(0.1)

    def close(self) -> None:
        if self.in_txn:
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(10)
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()


def relay(
    settings: Settings,
    topics: Sequence[str],
    group: str,
    convert: Convert,
    *,
    kind: str,
    batch: int = 1000,
    within: float = 1.0,
    once: bool = True,
    stop: threading.Event | None = None,
    timeout: float = 60.0,
    on_batch: Callable[[Report], None] | None = None,
) -> Report:
    """Relay ``topics`` to the changes topic and the DLQ, exactly once; return what was done.

    ``once``: stop when every input partition reached its high watermark as of the start (a
    backfill); otherwise run until ``stop`` is set. ``batch`` records (or what arrived within
    ``within`` seconds) make one transaction.
    """
    if not topics:
        raise BusError("no input topic given")
    r = _Relay(settings, topics, group, timeout=timeout)
    report = Report()
    try:
        try:
            r.producer.init_transactions(timeout)
            parts = r.partitions()
            committed = r.consumer.committed(parts, timeout=timeout)
            ends: dict[tuple[str, int], int] = {}
            nexts: dict[tuple[str, int], int] = {}
            for tp in committed:
                low, high = r.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
                nexts[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else low
                ends[(tp.topic, tp.partition)] = high
            r.consumer.assign([TopicPartition(t, p, o if o >= 0 else OFFSET_BEGINNING) for (t, p), o in nexts.items()])
        except KafkaException as exc:
            raise BusError(f"cannot start relaying {', '.join(r.topics)}: {exc}") from exc

        def finished() -> bool:
            if not once:
                return False
            left = [k for k, end in ends.items() if nexts[k] < end]
            if not left:
                return True
            # Transaction markers occupy offsets but are never delivered: the position passes them.
            for tp in r.consumer.position([TopicPartition(t, p) for t, p in left]):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    ends.pop((tp.topic, tp.partition))
            return all(nexts[k] >= end for k, end in ends.items())

        retries = 0
        while not (stop is not None and stop.is_set()):
            try:
                msgs = r.consumer.consume(batch, within)
            except KafkaException as exc:
                raise BusError(f"cannot consume {', '.join(r.topics)}: {exc}") from exc
            msgs = [m for m in msgs if not skip_eof(m)]
            if not msgs:
                if finished():
                    break
                continue
            part = Report()
            positions: dict[tuple[str, int], int] = {}
            try:
                r.producer.begin_transaction()
                r.in_txn = True
                now = datetime.now(UTC)
                for m in msgs:
                    topic, partition, offset = m.topic() or "", m.partition() or 0, m.offset() or 0
                    positions[(topic, partition)] = offset + 1
                    part.records += 1
                    value = m.value()
                    try:
                        events = convert(value, topic, partition, offset, m.key())
                    except DecodeError as exc:
                        part.rejected += 1
                        part.reasons[exc.reason] = part.reasons.get(exc.reason, 0) + 1
                        origin = f"{kind}:{topic}[{partition}]@{offset}"
                        r.send(settings.topic_dlq, value or b"", origin.encode(), exc.dlq_headers(origin, source=kind))
                        continue
                    for event in events:
                        r.send(settings.topic_changes, encode(with_observed_time(event, now)), event.scope.encode())
                    part.events += len(events)
                offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(positions.items())]
                r.producer.send_offsets_to_transaction(offsets, r.consumer.consumer_group_metadata(), timeout)
                r.producer.commit_transaction(timeout)
                r.in_txn = False
            except KafkaException as exc:
                if r.in_txn:
                    with contextlib.suppress(KafkaException):
                        r.producer.abort_transaction(timeout)
                    r.in_txn = False
                if not _retriable(exc) or retries >= _RETRIES:
                    raise BusError(f"Kafka refused a transaction of {kind} (nothing of it is visible; "
                                   f"restart to resume from the committed offsets): {exc}") from exc
                retries += 1
                r.failed.clear()
                for (t, p), o in nexts.items():  # read the aborted batch again
                    r.consumer.seek(TopicPartition(t, p, o))
                time.sleep(0.5 * retries)
                continue
            if r.failed:
                raise BusError(f"{len(r.failed)} records of {kind} failed after commit: {r.failed[0]}")
            retries = 0
            nexts.update(positions)
            for name in ("records", "events", "rejected"):
                setattr(report, name, getattr(report, name) + getattr(part, name))
            for reason, n in part.reasons.items():
                report.reasons[reason] = report.reasons.get(reason, 0) + n
            report.commits += 1
            if on_batch is not None:
                on_batch(report)
            if finished():
                break
        return report
    finally:
        r.close()


def skip_eof(msg: Any) -> bool:
    """True for a partition-EOF event (skip it), False for a record; BusError for any other
    consumer error, naming ``topic[partition]``."""
    err = msg.error()
    if err is None:
        return False
    if err.code() == KafkaError._PARTITION_EOF:
        return True
    raise BusError(f"cannot consume {msg.topic()}[{msg.partition()}]: {err}")
