"""``causelog rules run``: the rules engine over ``<prefix>.chains``, exactly once.

A consume-transform-produce loop (confluent-kafka, ``read_committed``): each record of
``<prefix>.chains`` (one stored event with its chain id and person, see
:func:`pipeline.rules.engine.encode_item`) is folded into the pure reducer of its partition
(:meth:`pipeline.rules.engine.Engine.step`; the watermark is the latest event time seen in the
partition). Per batch, **one Kafka transaction** holds the alerts (to ``<prefix>.alerts``, key =
alert id), the reducer state of every partition the batch touched (to the compacted
``<prefix>.rules-state.<group>``, key = ``<topic>[<partition>]``) and the consumer offsets. A
restarted runner folds the latest state of each partition back and resumes from the offsets
committed with it, so a crash or a restart neither loses nor repeats an alert; alert ids are
deterministic besides. A record that is not a chains record goes to the DLQ with the reason.

After each committed batch the alerts are also handed to ``on_alerts`` (the CLI stores them in
the ``alerts`` table, idempotently by id).

Partitions are assigned explicitly (all of them): one runner per group, like the relay of the
Kafka sources; run it under a supervisor for availability.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.bus.relay import skip_eof
from pipeline.errors import BusError
from pipeline.rules.engine import Engine, State, decode_item, decode_state, encode_state, time_us
from pipeline.rules.model import Alert
from pipeline.settings import Settings

_ALERT_ENCODER = msgspec.json.Encoder()
# Key, in the state topic, of the alerts of the last transaction that had any (see ``on_restored``).
LAST_ALERTS_KEY = "last-alerts"


@dataclass
class RunReport:
    """What a run did."""

    records: int = 0
    alerts: int = 0
    rejected: int = 0
    commits: int = 0
    restored: dict[str, int] = field(default_factory=dict)  # partition -> watermark restored


def state_topic(settings: Settings, group: str) -> str:
    """The compacted topic of the rules state of ``group``."""
    return f"{settings.topic_prefix}.rules-state.{group}"


def _ensure_state_topic(settings: Settings, name: str, timeout: float) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    if name in admin.list_topics(timeout=timeout).topics:
        return
    fut = admin.create_topics([NewTopic(name, 1, 1, config={
        "cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1",
        "max.message.bytes": str(16 * 1024 * 1024)})])[name]
    try:
        fut.result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BusError(f"cannot create {name}: {exc}") from exc


def _restore(settings: Settings, topic: str, timeout: float) -> dict[str, bytes]:
    """The latest committed state record per key of the state topic."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "causelog-rules-restore",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    latest: dict[str, bytes] = {}
    try:
        tp = TopicPartition(topic, 0, OFFSET_BEGINNING)
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
        if high <= low:
            return latest
        consumer.assign([tp])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    key = (m.key() or b"").decode()
                    value = m.value()
                    if value is None:
                        latest.pop(key, None)
                    else:
                        latest[key] = value
            (pos,) = consumer.position([TopicPartition(topic, 0)])
            if pos.offset >= high:
                return latest
        raise BusError(f"timed out reading the rules state from {topic}")
    finally:
        consumer.close()


def _commit_idle(producer: Producer, consumer: Consumer, topic: str, nexts: dict[int, int], timeout: float) -> None:
    """Idle: commit positions that moved past what was committed without a record (the markers
    the worker's transactions leave on ``<prefix>.chains``), so the runner's lag reads 0 when it is
    done. Every record consumed is already committed, so this skips nothing."""
    try:
        moved = [tp for tp in consumer.position([TopicPartition(topic, p) for p in nexts])
                 if tp.offset > nexts[tp.partition]]
        if not moved:
            return
        producer.begin_transaction()
        try:
            producer.send_offsets_to_transaction(moved, consumer.consumer_group_metadata(), timeout)
            producer.commit_transaction(timeout)
        except KafkaException:
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(timeout)
            raise
    except KafkaException as exc:
        raise BusError(f"cannot commit the rules runner's position on {topic}: {exc}") from exc
    for tp in moved:
        nexts[tp.partition] = tp.offset


def run_rules(
    settings: Settings,
    engine: Engine,
    *,
    group: str | None = None,
    once: bool = False,
    stop: threading.Event | None = None,
    batch: int = 2000,
    within: float = 0.5,
    timeout: float = 60.0,
    on_alerts: Callable[[list[Alert]], None] | None = None,
    max_batches: int | None = None,
    report: RunReport | None = None,
    on_ready: Callable[[RunReport], None] | None = None,
    on_restored: Callable[[list[Alert]], None] | None = None,
) -> RunReport:
    """Evaluate ``engine`` over ``<prefix>.chains`` until ``stop`` (or, with ``once``, the end as
    of the start). ``on_ready`` is called once the state is restored and consuming starts.

    ``report`` (default a new one) is updated after every committed batch: metrics read it live.
    ``on_restored`` gets, at start, the alerts of the last committed transaction that had any: a
    runner killed after its commit but before ``on_alerts`` finished would otherwise never hand
    them over (``on_alerts`` must be idempotent by alert id: the table is)."""
    group = group or f"{settings.group}-rules"
    topic = settings.topic_chains
    st_topic = state_topic(settings, group)
    _ensure_state_topic(settings, st_topic, timeout)
    ident = hashlib.sha256(f"{settings.topic_prefix}/{group}/{topic}".encode()).hexdigest()[:24]
    producer = Producer({
        "bootstrap.servers": settings.kafka_bootstrap, "transactional.id": f"causelog-rules-{ident}",
        "enable.idempotence": True, "acks": "all", "linger.ms": 20, "transaction.timeout.ms": 120000,
        "message.max.bytes": 16 * 1024 * 1024,
    })
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "isolation.level": "read_committed", "auto.offset.reset": "earliest",
    })
    report = report if report is not None else RunReport()
    failed: list[str] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    def send(t: str, value: bytes, key: bytes, headers: Any = None) -> None:
        while True:
            try:
                producer.produce(t, value=value, key=key, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                producer.poll(0.1)

    in_txn = False
    try:
        try:
            producer.init_transactions(timeout)
            md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if md is None or md.error is not None or not md.partitions:
                raise BusError(f"topic {topic} does not exist on {settings.kafka_bootstrap}")
            parts = [TopicPartition(topic, p) for p in sorted(md.partitions)]
            committed = consumer.committed(parts, timeout=timeout)
            ends: dict[int, int] = {}
            nexts: dict[int, int] = {}
            for tp in committed:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
                nexts[tp.partition] = tp.offset if tp.offset >= 0 else low
                ends[tp.partition] = high
            consumer.assign([TopicPartition(topic, p, o) for p, o in nexts.items()])
            saved = _restore(settings, st_topic, timeout)
        except KafkaException as exc:
            raise BusError(f"cannot start the rules runner on {topic}: {exc}") from exc
        states: dict[int, State] = {}
        for p in nexts:
            data = saved.get(f"{topic}[{p}]")
            states[p] = decode_state(data) if data else State()
            if data:
                report.restored[str(p)] = states[p].watermark
        last = saved.get(LAST_ALERTS_KEY)
        if last and on_restored is not None:
            on_restored(msgspec.json.decode(last, type=list[Alert]))
        if on_ready is not None:
            on_ready(report)

        def finished() -> bool:
            if not once:
                return False
            left = [p for p, end in ends.items() if nexts[p] < end]
            for tp in consumer.position([TopicPartition(topic, p) for p in left]) if left else []:
                if tp.offset >= ends[tp.partition]:
                    nexts[tp.partition] = max(nexts[tp.partition], tp.offset)
            return all(nexts[p] >= end for p, end in ends.items())

        batches = 0
        while not (stop is not None and stop.is_set()):
            if max_batches is not None and batches >= max_batches:
                break
            try:
                msgs = consumer.consume(batch, within)
            except KafkaException as exc:
                raise BusError(f"cannot consume {topic}: {exc}") from exc
            msgs = [m for m in msgs if not skip_eof(m)]
            if not msgs:
                if finished():
                    break
                _commit_idle(producer, consumer, topic, nexts, timeout)
                continue
            # Work on copies: an aborted transaction must leave the committed states untouched.
            work = {p: decode_state(encode_state(s)) for p, s in states.items()
                    if p in {m.partition() for m in msgs}}
            out: list[Alert] = []
            positions: dict[int, int] = {}
            rejected = 0
            try:
                producer.begin_transaction()
                in_txn = True
                for m in msgs:
                    p, offset = m.partition() or 0, m.offset() or 0
                    positions[p] = offset + 1
                    origin = f"{topic}[{p}]@{offset}"
                    try:
                        item = decode_item(m.value() or b"")
                    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
                        rejected += 1
                        send(settings.topic_dlq, m.value() or b"", origin.encode(), [
                            ("reason", b"invalid_value"), ("error", f"{origin}: not a chains record: {exc}".encode()),
                            ("origin", origin.encode()), ("source", b"rules")])
                        continue
                    s = work[p]
                    wm = max(s.watermark, time_us(item.event["time"]))
                    work[p], alerts = engine.step(s, item, wm)
                    out.extend(alerts)
                for a in out:
                    send(settings.topic_alerts, _ALERT_ENCODER.encode(a), a.id.encode())
                for p, s in work.items():
                    send(st_topic, encode_state(s), f"{topic}[{p}]".encode())
                if out:
                    send(st_topic, _ALERT_ENCODER.encode(out), LAST_ALERTS_KEY.encode())
                offsets = [TopicPartition(topic, p, o) for p, o in sorted(positions.items())]
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), timeout)
                producer.commit_transaction(timeout)
                in_txn = False
            except KafkaException as exc:
                if in_txn:
                    with contextlib.suppress(KafkaException):
                        producer.abort_transaction(timeout)
                    in_txn = False
                raise BusError(f"Kafka refused a transaction of the rules runner (nothing of it is visible; "
                               f"restart to resume from the committed offsets): {exc}") from exc
            if failed:
                raise BusError(f"{len(failed)} records of the rules runner failed after commit: {failed[0]}")
            states.update(work)
            nexts.update(positions)
            batches += 1
            report.records += len(msgs)
            report.alerts += len(out)
            report.rejected += rejected
            report.commits += 1
            if out and on_alerts is not None:
                on_alerts(out)
            if finished():
                break
        return report
    finally:
        if in_txn:
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(10)
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()
