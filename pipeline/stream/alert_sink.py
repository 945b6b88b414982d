"""The alert sink: ``<prefix>.alerts`` into the ``alerts`` table and out to the receivers, at least once.

``causelog rules run`` commits its alerts to ``<prefix>.alerts`` in its Kafka transactions; the
consumer loops of this module (threads of the same process) take them from there:

- **store** (consumer group ``<rules group>-alerts-store``): a batch of alerts is written to the
  ``alerts`` table (idempotent by alert id) and only then are its offsets committed. A store that
  cannot be reached is said on stderr and retried with backoff (the batch is read again); no offset
  is committed past an alert that is not in the table.
- **notify** (one consumer group per receiver, ``<rules group>-notify-<receiver>``): each alert the
  receiver wants is POSTed by a pool of ``concurrency`` threads with retries and backoff
  (``notify.yaml``); its outcome (``delivered``, or ``failed`` after every attempt) is written to
  ``alert_deliveries``, and only then may the group's offset pass it: per partition the committed
  offset is the lowest one whose alert is not finished. A process killed before that delivers the
  alert again after its restart: delivery is **at least once** (PagerDuty dedups on ``dedup_key`` =
  alert id; webhook receivers should dedup on the alert's ``id``; a Slack message may repeat).

A receiver has a group of its own, so a dead or slow receiver delays neither the table, nor the
other receivers, nor rule evaluation (the runner only produces to Kafka); a receiver with more than
``window`` alerts in flight stops reading (its partitions are paused) until some finish. The loops
subscribe, so several ``rules run`` processes share the partitions of ``<prefix>.alerts``. A
receiver group without a committed offset starts at the end of the topic as of the sink's start (a
receiver added to ``notify.yaml`` gets the alerts from then on, not the history); the store group
starts at the beginning (storing is idempotent). A record of ``<prefix>.alerts`` that is not an
alert goes to the DLQ (sent by the store loop, skipped by the receivers).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.errors import BusError, CauselogError
from pipeline.rules.model import Alert
from pipeline.rules.notify import NotifyConfig, Receiver
from pipeline.settings import Settings
from pipeline.stream.notifier import Delivery, deliver, post_json, utc_now

Say = Callable[[str], None]
_DECODER = msgspec.json.Decoder(Alert)


def rules_group(settings: Settings, group: str | None = None) -> str:
    """The rules runner's consumer group (``run_rules``'s default)."""
    return group or f"{settings.group}-rules"


def store_group(settings: Settings, group: str | None = None) -> str:
    """Consumer group of the loop that stores alerts in the table."""
    return f"{rules_group(settings, group)}-alerts-store"


def notify_group(settings: Settings, receiver: str, group: str | None = None) -> str:
    """Consumer group of the loop that notifies ``receiver``."""
    return f"{rules_group(settings, group)}-notify-{receiver}"


def sink_groups(settings: Settings, config: NotifyConfig, group: str | None = None) -> dict[str, str]:
    """The sink's consumer groups by what they do: ``store`` and ``notify:<receiver>``."""
    out = {"store": store_group(settings, group)}
    out.update({f"notify:{r.name}": notify_group(settings, r.name, group) for r in config.receivers})
    return out


def sink_lag(settings: Settings, config: NotifyConfig, group: str | None = None) -> dict[str, int]:
    """Per sink group (see :func:`sink_groups`): records of ``<prefix>.alerts`` it has not finished."""
    from pipeline.bus import consumer_lag

    return {what: sum(p["lag"] for p in consumer_lag(replace(settings, group=g), settings.topic_alerts).values())
            for what, g in sink_groups(settings, config, group).items()}


class Pending:
    """Per partition: the offsets read whose alert is not finished, and what may be committed.

    Offsets are added in increasing order per partition; the commit point of a partition is its
    lowest unfinished offset, else the one after the last offset read. ``forget`` (partitions
    revoked) starts a new epoch: work of the old one no longer counts. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}
        self._epoch: dict[int, int] = {}

    def add(self, partition: int, offset: int, unfinished: bool) -> int:
        """Note a record read (``unfinished``: its alert still has to be delivered); its epoch."""
        with self._lock:
            self._next[partition] = max(self._next.get(partition, 0), offset + 1)
            if unfinished:
                self._open.setdefault(partition, set()).add(offset)
            return self._epoch.get(partition, 0)

    def finish(self, partition: int, offset: int, epoch: int) -> None:
        """The alert at ``offset`` has its final outcome recorded."""
        with self._lock:
            if self._epoch.get(partition, 0) == epoch:
                self._open.get(partition, set()).discard(offset)

    def live(self, partition: int, epoch: int) -> bool:
        """Whether work of ``epoch`` still counts (the partition was not revoked since)."""
        with self._lock:
            return self._epoch.get(partition, 0) == epoch

    def idle(self, partition: int) -> bool:
        """Nothing unfinished in ``partition``."""
        with self._lock:
            return not self._open.get(partition)

    def unfinished(self) -> int:
        """Alerts read and not finished, over every partition."""
        with self._lock:
            return sum(len(s) for s in self._open.values())

    def commit_points(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Per partition read: the offset that may be committed."""
        with self._lock:
            wanted = set(self._next) if partitions is None else set(partitions) & set(self._next)
            return {p: min(self._open[p]) if self._open.get(p) else self._next[p] for p in wanted}

    def forget(self, partitions: Iterable[int]) -> None:
        """The partitions were revoked: drop what is known of them."""
        with self._lock:
            for p in partitions:
                self._epoch[p] = self._epoch.get(p, 0) + 1
                self._open.pop(p, None)
                self._next.pop(p, None)


def start_at_end(settings: Settings, group: str, timeout: float = 30.0) -> int:
    """Commit the end of ``<prefix>.alerts`` for every partition ``group`` has no offset of (a new
    receiver starts with the alerts from now on); return how many partitions were set. A group
    another process already consumes is left as it is."""
    topic = settings.topic_alerts
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                md = c.list_topics(topic, timeout=timeout).topics.get(topic)
                if md is None or md.error is not None:
                    raise BusError(f"topic {topic} does not exist on {settings.kafka_bootstrap}")
                parts = [TopicPartition(topic, p) for p in sorted(md.partitions)]
                missing = [tp.partition for tp in c.committed(parts, timeout=timeout) if tp.offset < 0]
                ends = [TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p),
                                                                         timeout=timeout)[1]) for p in missing]
                break
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                # A topic just created has no leader for a moment.
                transient = (isinstance(err, KafkaError) and err.retriable()) or _leaderless(err)
                if not transient or time.monotonic() >= deadline:
                    raise BusError(f"cannot read the offsets of {group} on {topic}: {exc}") from exc
                time.sleep(0.2)
        if not ends:
            return 0
        try:
            c.commit(offsets=ends, asynchronous=False)
        except KafkaException:
            return 0  # members of the group consume it already: their offsets stand
        return len(ends)
    finally:
        with contextlib.suppress(KafkaException, RuntimeError):
            c.close()


def _leaderless(err: object) -> bool:
    return isinstance(err, KafkaError) and err.code() in (
        KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART)


class _Loop(threading.Thread):
    """A consumer of ``<prefix>.alerts`` in a group, subscribed (partitions shared by processes)."""

    def __init__(self, sink: AlertSink, group: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.sink = sink
        self.group = group
        self.topic = sink.settings.topic_alerts
        self.committed: dict[int, int] = {}
        self.owned: set[int] = set()  # partitions assigned to this member now
        self.consumer = Consumer({
            "bootstrap.servers": sink.settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "isolation.level": "read_committed", "auto.offset.reset": "earliest",
            # A process killed with SIGKILL leaves the group only when its session times out:
            # keep that short, the restarted process waits for it.
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
            "partition.assignment.strategy": "cooperative-sticky",
        })

    def run(self) -> None:
        try:
            self.consumer.subscribe([self.topic], on_assign=self.assigned, on_revoke=self.revoked,
                                    on_lost=self.lost)
            self.loop()
        except Exception as exc:  # noqa: BLE001 - a dead loop must stop the process, not vanish
            self.sink.fatal(f"alert sink {self.name} stopped: {exc}")
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                self.consumer.close()

    def loop(self) -> None:
        raise NotImplementedError

    def assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.committed.pop(tp.partition, None)
        self.owned = self.owned | {tp.partition for tp in partitions}

    def revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.committed.pop(tp.partition, None)
        self.owned = self.owned - {tp.partition for tp in partitions}

    def lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions lost (session expired): others may own them already, commit nothing."""
        _Loop.revoked(self, consumer, partitions)

    def consume(self, n: int, within: float) -> list[Any]:
        """Records of the assigned partitions; transient consumer errors are said, not raised."""
        try:
            msgs = self.consumer.consume(n, within)
        except KafkaException as exc:
            raise BusError(f"cannot consume {self.topic} ({self.group}): {exc}") from exc
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise BusError(f"cannot consume {m.topic()}[{m.partition()}] ({self.group}): {err}")
                self.sink.say(f"{self.group}: {m.topic()}[{m.partition()}]: {err} (retrying)")
        return out

    def commit(self, points: dict[int, int]) -> None:
        """Commit the offsets that moved; a refused commit is said and tried again later."""
        moved = [TopicPartition(self.topic, p, o) for p, o in sorted(points.items()) if o > self.committed.get(p, -1)]
        if not moved:
            return
        try:
            self.consumer.commit(offsets=moved, asynchronous=False)
        except KafkaException as exc:
            self.sink.say(f"{self.group}: cannot commit offsets on {self.topic} yet: {exc}")
            return
        for tp in moved:
            self.committed[tp.partition] = tp.offset

    def positions(self) -> dict[int, int]:
        """Per assigned partition, the position (past what was read, and past transaction markers)."""
        try:
            return {tp.partition: tp.offset for tp in self.consumer.position(self.consumer.assignment())
                    if tp.offset >= 0}
        except KafkaException:
            return {}


def _after(msgs: Sequence[Any]) -> dict[int, int]:
    out: dict[int, int] = {}
    for m in msgs:
        out[m.partition()] = max(out.get(m.partition(), 0), m.offset() + 1)
    return out


class _StoreLoop(_Loop):
    """``<prefix>.alerts`` -> the ``alerts`` table; offsets committed after the write landed."""

    def __init__(self, sink: AlertSink) -> None:
        super().__init__(sink, store_group(sink.settings, sink.group), "alert-sink-store")
        self._dlq: Producer | None = None

    def loop(self) -> None:
        sink = self.sink
        failures = 0
        while not sink.stopping.is_set():
            msgs = self.consume(sink.batch, sink.within)
            if not msgs:
                self.commit(self.positions())
                continue
            alerts, bad = self._decode(msgs)
            try:
                sink.store_alerts(alerts)
                if bad:  # after the store: a batch read again after a failure sends them once
                    self._to_dlq(bad)
            except CauselogError as exc:
                failures += 1
                sink.say(f"{len(alerts)} alerts not stored in the alerts table yet (they stay in {self.topic}; "
                         f"retrying): {exc}")
                if sink.on_store_failed is not None:
                    sink.on_store_failed(len(alerts))
                self._rewind(msgs)
                sink.stopping.wait(min(30.0, sink.retry * 2 ** min(failures - 1, 6)))
                continue
            if failures:
                sink.say(f"alerts table reachable again: {len(alerts)} alerts stored")
            failures = 0
            self.commit(_after(msgs))
            if sink.on_stored is not None:
                sink.on_stored(alerts)

    @staticmethod
    def _decode(msgs: Sequence[Any]) -> tuple[list[Alert], list[tuple[Any, Exception]]]:
        alerts: list[Alert] = []
        bad: list[tuple[Any, Exception]] = []
        for m in msgs:
            try:
                alerts.append(_DECODER.decode(m.value() or b""))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                bad.append((m, exc))
        return alerts, bad

    def _to_dlq(self, bad: list[tuple[Any, Exception]]) -> None:
        s = self.sink.settings
        if self._dlq is None:
            self._dlq = Producer({"bootstrap.servers": s.kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
        for m, exc in bad:
            origin = f"{m.topic()}[{m.partition()}]@{m.offset()}"
            self._dlq.produce(s.topic_dlq, m.value() or b"", f"alert-sink:{origin}".encode(), headers=[
                ("reason", b"invalid_value"), ("error", f"{origin}: not an alert: {exc}".encode()),
                ("origin", origin.encode()), ("source", b"alert-sink")])
            self.sink.say(f"{origin}: not an alert, sent to {s.topic_dlq}: {exc}")
        if self._dlq.flush(30) != 0:
            raise BusError(f"cannot send {len(bad)} bad records of {self.topic} to {s.topic_dlq}")

    def _rewind(self, msgs: Sequence[Any]) -> None:
        """Read the batch again next time (a partition revoked meanwhile is its new owner's)."""
        first: dict[int, int] = {}
        for m in msgs:
            first[m.partition()] = min(first.get(m.partition(), m.offset()), m.offset())
        for p, o in first.items():
            with contextlib.suppress(KafkaException):
                self.consumer.seek(TopicPartition(self.topic, p, o))


class _NotifyLoop(_Loop):
    """``<prefix>.alerts`` -> one receiver; offsets committed once each alert's outcome is recorded."""

    def __init__(self, sink: AlertSink, receiver: Receiver) -> None:
        super().__init__(sink, notify_group(sink.settings, receiver.name, sink.group), f"alert-sink-{receiver.name}")
        self.receiver = receiver
        self.pending = Pending()
        self.work: queue.Queue[tuple[int, int, int, Alert] | None] = queue.Queue()
        self.done: queue.Queue[tuple[int, int, int, Delivery]] = queue.Queue()
        self.finished: list[tuple[int, int, int, Delivery]] = []  # outcomes not written to the table yet
        self.record_failures = 0
        self.retry_at = 0.0
        self.failing = False  # the receiver's last attempt failed (said once per streak)
        self.workers = [threading.Thread(target=self._deliver, name=f"{self.name}-{i}", daemon=True)
                        for i in range(sink.config.concurrency)]

    def loop(self) -> None:
        sink = self.sink
        for w in self.workers:
            w.start()
        try:
            while not sink.stopping.is_set():
                self._read()
                self._record()
                points = self.pending.commit_points()
                for p, pos in self.positions().items():
                    if self.pending.idle(p):  # past transaction markers and alerts it does not want
                        points[p] = max(points.get(p, 0), pos)
                self.commit(points)
        finally:
            for _ in self.workers:
                self.work.put(None)
            deadline = time.monotonic() + sink.timeout + 1
            for w in self.workers:
                w.join(max(0.0, deadline - time.monotonic()))
            self.retry_at = 0.0
            self._record()
            self.commit(self.pending.commit_points())

    def _read(self) -> None:
        sink = self.sink
        over = self.pending.unfinished() >= sink.window
        try:
            assignment = self.consumer.assignment()
            if over:
                self.consumer.pause(assignment)
            elif assignment:
                self.consumer.resume(assignment)
        except KafkaException as exc:
            raise BusError(f"cannot pause or resume {self.topic} ({self.group}): {exc}") from exc
        for m in self.consume(sink.batch, 0.1 if over or self.pending.unfinished() else sink.within):
            try:
                alert: Alert | None = _DECODER.decode(m.value() or b"")
            except (msgspec.ValidationError, msgspec.DecodeError):
                alert = None  # the store loop sends it to the DLQ
            wanted = alert is not None and self.receiver.wants(alert)
            epoch = self.pending.add(m.partition(), m.offset(), wanted)
            if alert is not None and wanted:
                self.work.put((m.partition(), m.offset(), epoch, alert))

    def _deliver(self) -> None:
        sink = self.sink
        while (item := self.work.get()) is not None:
            p, offset, epoch, alert = item
            if not self.pending.live(p, epoch):
                continue  # revoked: the partition's new owner delivers it

            def wait(seconds: float, p: int = p, epoch: int = epoch) -> bool:
                # Stop retrying when the process stops or the partition went to another member.
                return sink.stopping.wait(seconds) or not self.pending.live(p, epoch)

            d = deliver(self.receiver, alert, attempts=sink.config.attempts, backoff=sink.config.backoff,
                        timeout=sink.timeout, wait=wait, post=sink.post, now=sink.now, failed=self._failed)
            if d is not None and d.status == "delivered" and self.failing:
                self.failing = False
                sink.say(f"receiver {self.receiver.name} takes notifications again")
            if d is None:
                if sink.stopping.is_set():
                    return  # no final outcome: not committed, delivered again after the restart
                continue  # revoked: the partition's new owner delivers it
            self.done.put((p, offset, epoch, d))

    def _failed(self, attempt: int, error: str) -> None:
        if not self.failing:
            self.failing = True
            self.sink.say(f"receiver {self.receiver.name} failing: {error} (retrying, {self.sink.config.attempts} "
                          f"attempts per alert)")

    def _record(self) -> None:
        """Write finished outcomes to ``alert_deliveries``; then their offsets may be committed."""
        sink = self.sink
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                break
            self.finished.append(item)
            if sink.on_delivery is not None:
                sink.on_delivery(item[3])
        if not self.finished or time.monotonic() < self.retry_at:
            return
        try:
            sink.store_deliveries([d for *_, d in self.finished])
        except CauselogError as exc:
            self.record_failures += 1
            self.retry_at = time.monotonic() + min(30.0, sink.retry * 2 ** min(self.record_failures - 1, 6))
            sink.say(f"{len(self.finished)} delivery outcomes of {self.receiver.name} not stored in alert_deliveries "
                     f"yet (their alerts are not committed; retrying): {exc}")
            return
        self.record_failures = 0
        for p, offset, epoch, _ in self.finished:
            self.pending.finish(p, offset, epoch)
        self.finished = []

    def revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Keep what is finished, leave the rest to the partitions' new owner.
        ps = [tp.partition for tp in partitions]
        self.commit(self.pending.commit_points(ps))
        self.pending.forget(ps)
        super().revoked(consumer, partitions)

    def lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.pending.forget(tp.partition for tp in partitions)
        _Loop.revoked(self, consumer, partitions)


class AlertSink:
    """The store loop and one notify loop per receiver, as threads (see the module docstring).

    ``store_alerts(alerts)`` and ``store_deliveries(deliveries)`` write to the tables and raise
    :class:`~pipeline.errors.CauselogError` when they cannot (then they are retried). ``say`` gets
    every problem as one line; ``fatal`` is called once if a loop dies (the caller stops the process
    so a supervisor restarts it). ``on_stored``, ``on_store_failed`` and ``on_delivery`` feed metrics."""

    def __init__(self, settings: Settings, config: NotifyConfig, *,
                 store_alerts: Callable[[list[Alert]], None],
                 store_deliveries: Callable[[list[Delivery]], None],
                 say: Say, fatal: Say | None = None, group: str | None = None,
                 on_stored: Callable[[list[Alert]], None] | None = None,
                 on_store_failed: Callable[[int], None] | None = None,
                 on_delivery: Callable[[Delivery], None] | None = None,
                 post: Callable[[str, object, float], None] = post_json, now: Callable[[], str] = utc_now,
                 timeout: float = 10.0, within: float = 0.5, batch: int = 500, window: int = 1000,
                 retry: float = 1.0) -> None:
        self.settings = settings
        self.config = config
        self.store_alerts = store_alerts
        self.store_deliveries = store_deliveries
        self.say = say
        self._fatal = fatal
        self.group = group
        self.on_stored = on_stored
        self.on_store_failed = on_store_failed
        self.on_delivery = on_delivery
        self.post = post
        self.now = now
        self.timeout = timeout
        self.within = within
        self.batch = batch
        self.window = window
        self.retry = retry
        self.stopping = threading.Event()
        self.failure: str | None = None
        self._loops: list[_Loop] = []

    def start(self) -> None:
        """Start the loops (a receiver new to its group starts at the topic's end as of now)."""
        for r in self.config.receivers:
            start_at_end(self.settings, notify_group(self.settings, r.name, self.group))
        self._loops = [_StoreLoop(self), *(_NotifyLoop(self, r) for r in self.config.receivers)]
        for loop in self._loops:
            loop.start()

    def fatal(self, message: str) -> None:
        """A loop died: say it, remember it, tell the caller."""
        self.say(message)
        if self.failure is None:
            self.failure = message
            if self._fatal is not None:
                self._fatal(message)

    def owned(self) -> dict[str, set[int]]:
        """Per loop (``store``, ``notify:<receiver>``): the partitions of ``<prefix>.alerts`` it owns now."""
        return {("store" if isinstance(loop, _StoreLoop) else f"notify:{loop.receiver.name}"): set(loop.owned)
                for loop in self._loops if isinstance(loop, _StoreLoop | _NotifyLoop)}

    def in_flight(self) -> dict[str, int]:
        """Per receiver: alerts read and not finished (delivered, or failed after every attempt)."""
        return {loop.receiver.name: loop.pending.unfinished() for loop in self._loops if isinstance(loop, _NotifyLoop)}

    def drain(self, timeout: float) -> dict[str, int]:
        """Wait until every sink group has finished ``<prefix>.alerts`` (or ``timeout`` passed, or a
        loop died); return what is left per group (see :func:`sink_lag`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = {k: v for k, v in sink_lag(self.settings, self.config, self.group).items() if v}
            if not left or time.monotonic() >= deadline or self.failure is not None:
                return left
            time.sleep(0.3)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the loops: finished work is committed, work in flight is left for the next run."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for loop in self._loops:
            loop.join(max(0.0, deadline - time.monotonic()))
