"""confluent-kafka helpers shared by sources, the CLI and the worker.

Producers are idempotent with ``acks=all`` (DESIGN.md §4). Delivery failures are never ignored:
:class:`DeliveryTracker` collects them and ``flush`` raises ``BusError`` naming the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.errors import BusError
from pipeline.settings import Settings

# Room above CAUSELOG_MAX_EVENT_BYTES so an oversized record reaches the worker and is rejected
# there with a reason, instead of failing at produce time where nobody sees it.
TOPIC_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A <prefix>.chains record is a whole envelope of <prefix>.changes plus its chain id, person and
# merged chain ids: room for that tail.
CHAINS_MAX_MESSAGE_BYTES = TOPIC_MAX_MESSAGE_BYTES + 256 * 1024


@dataclass(frozen=True)
class TopicSpec:
    """A topic causelog creates: name, partitions and configs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, changes_partitions: int | None = None) -> list[TopicSpec]:
    """The topics of DESIGN.md §4 with their partition counts and configs.

    ``changes_partitions``: the partition count of an existing ``<prefix>.changes``; the
    correlation changelog needs one partition per partition of it.
    """
    n = changes_partitions or settings.partitions
    keep = {"retention.ms": "-1", "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)}
    return [
        TopicSpec(settings.topic_changes, n, dict(keep)),
        # The DLQ keeps everything forever: a rejected record is evidence until someone looks.
        TopicSpec(settings.topic_dlq, 1, dict(keep)),
        # The worker writes the events stored from changes[p] to chains[p]: same partition count.
        TopicSpec(settings.topic_chains, n, {"retention.ms": "-1", "max.message.bytes": str(CHAINS_MAX_MESSAGE_BYTES)}),
        TopicSpec(settings.topic_alerts, 1, {"retention.ms": "-1"}),
        # Source cursors: only the latest value per source instance matters.
        TopicSpec(settings.topic_cursors, 1, {"cleanup.policy": "compact"}),
        # Correlation changelog: only the latest record per key matters, so compact eagerly.
        TopicSpec(settings.topic_correlation, n, {
            "cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1",
            "delete.retention.ms": "3600000", "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
        }),
        # Signed checkpoints, keyed <origin>/<size>: compaction only collapses a re-signed copy.
        TopicSpec(settings.topic_checkpoints, 1, {"cleanup.policy": "compact", "retention.ms": "-1"}),
    ]


def _admin(settings: Settings) -> AdminClient:
    # log_level 0: an unreachable broker is reported once by the caller (BusError), not by
    # librdkafka on stderr every 50 ms while it retries.
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 10000, "log_level": 0})


def wait_for_broker(settings: Settings, timeout: float = 60.0) -> int:
    """Block until the cluster answers a metadata request; return the broker count."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    admin = _admin(settings)
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            if md.brokers:
                return len(md.brokers)
        except KafkaException as exc:
            last = exc
        time.sleep(0.2)
    raise BusError(f"Kafka at {settings.kafka_bootstrap} did not answer within {timeout:.0f}s ({last})")


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create missing topics (never alters existing ones); return the names created."""
    admin = _admin(settings)
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BusError(f"cannot list topics on {settings.kafka_bootstrap}: {exc}") from exc
    replication = min(3, max(1, len(md.brokers)))
    existing = md.topics.get(settings.topic_changes)
    changes_partitions = len(existing.partitions) if existing is not None and existing.partitions else None
    missing = [s for s in topic_specs(settings, changes_partitions) if s.name not in md.topics]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication, config=s.config) for s in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise BusError(f"cannot create topic {name}: {exc}") from exc
    _wait_for_leaders(admin, [s.name for s in missing], timeout)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    # A topic is usable only once every partition has a leader; producing earlier fails fast.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        ready = all(
            n in md.topics and md.topics[n].partitions and all(p.leader >= 0 for p in md.topics[n].partitions.values())
            for n in names
        )
        if ready:
            return
        time.sleep(0.1)
    raise BusError(f"topics {names} have no leader after {timeout:.0f}s")


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent ``acks=all`` producer for the configured cluster."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.max.bytes": TOPIC_MAX_MESSAGE_BYTES,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
    }
    conf.update(overrides)
    try:
        return Producer(conf)
    except KafkaException as exc:
        raise BusError(f"cannot create a Kafka producer for {settings.kafka_bootstrap}: {exc}") from exc


class DeliveryTracker:
    """Delivery callback that records failures; call :meth:`flush` to wait and raise on any."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.delivered = 0
        self.failed: list[tuple[str, str]] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed.append((f"{msg.topic()}[{msg.partition()}]", str(err)))
        else:
            self.delivered += 1

    def produce(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> None:
        """Queue one record, waiting (backpressure) when the local queue is full."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self)
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:
                raise BusError(f"cannot produce to {topic}: {exc}") from exc

    def flush(self, timeout: float = 120.0) -> int:
        """Wait for every queued record; raise ``BusError`` if any was not acknowledged."""
        remaining = self.producer.flush(timeout)
        if remaining:
            raise BusError(f"{remaining} records not acknowledged by Kafka within {timeout:.0f}s")
        if self.failed:
            where, why = self.failed[0]
            raise BusError(f"{len(self.failed)} records were refused by Kafka; first: {where}: {why}")
        return self.delivered


def consumer_lag(settings: Settings, topic: str | None = None, timeout: float = 10.0) -> dict[int, dict[str, int]]:
    """Per partition of ``topic``: high watermark, committed offset of the worker group, lag."""
    topic = topic or settings.topic_changes
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.group, "enable.auto.commit": False}
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise BusError(f"topic {topic} does not exist on {settings.kafka_bootstrap}")
        parts = [TopicPartition(topic, p) for p in sorted(md.topics[topic].partitions)]
        committed = consumer.committed(parts, timeout=timeout)
        out: dict[int, dict[str, int]] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
            done = tp.offset if tp.offset >= 0 else low
            out[tp.partition] = {"high": high, "committed": max(tp.offset, -1), "lag": max(0, high - done)}
        return out
    except KafkaException as exc:
        raise BusError(f"cannot read offsets of {topic}: {exc}") from exc
    finally:
        consumer.close()


def oldest_unconsumed(settings: Settings, lag: dict[int, dict[str, int]], topic: str | None = None,
                      timeout: float = 5.0) -> dict[int, float]:
    """Per partition with lag: the timestamp (Unix seconds) of its oldest unconsumed record,
    the one at the group's committed offset. Partitions whose record did not arrive in
    ``timeout`` are left out."""
    topic = topic or settings.topic_changes
    wanted = {p: max(v["committed"], v["high"] - v["lag"]) for p, v in lag.items() if v["lag"] > 0}
    if not wanted:
        return {}
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.group}-status",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    out: dict[int, float] = {}
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in wanted.items()])
        deadline = time.monotonic() + timeout
        while len(out) < len(wanted) and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.2):
                p = m.partition()
                if m.error() is None and p is not None and p not in out:
                    kind, ts = m.timestamp()
                    if kind != TIMESTAMP_NOT_AVAILABLE:
                        out[p] = ts / 1000
        return out
    except KafkaException as exc:
        raise BusError(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()
