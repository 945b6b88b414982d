"""``causelog rules run``: the rules engine over ``<prefix>.chains``, exactly once, scaled out.

A consume-transform-produce loop (confluent-kafka, ``read_committed``) in two stages, both in
every runner of the consumer group ``<group>`` (which subscribes to both input topics):

1. **Per ``<prefix>.chains`` partition** (a chain lives in one partition: the worker correlates
   per partition): chain predicates and detections (:meth:`pipeline.rules.engine.Engine.route`);
   detection matches are alerts. For every correlation, absence and silence rule an event is
   relevant to, a record goes to the repartition topic ``<prefix>.rules-repart.<group>`` (as many
   partitions as chains), to the partition of its group (correlation ``group-by`` values, absence
   join key or chain id, source; :func:`pipeline.rules.engine.route_partition`). After each batch
   the partition also sends every repartition partition a tick with its event-time watermark (and
   whether it has reached its end for now).
2. **Per repartition partition**: one state for each group whatever chains partition its events
   came from (:meth:`pipeline.rules.engine.Engine.receive`); records are applied in event-time
   order once every chains partition has passed them, so a rebalance, a restart or a second
   runner changes no alert.

Per batch, **one Kafka transaction** holds the alerts (``<prefix>.alerts``, key = alert id), the
routed records and ticks, the state of every partition the batch touched (compacted
``<prefix>.rules-state.<group>``, as many partitions as chains; the state of ``<topic>[p]`` is
key ``<topic>[p]`` in partition ``p``, so a runner restores only the partitions it is given) and
the consumer offsets of both topics, sent with the group's metadata (KIP-447): a runner that lost
its partitions to a rebalance cannot commit (its transaction aborts and it re-reads from the
committed offsets, if it still owns them). No transaction is open across ``consume()`` calls, so
the rebalance callbacks only restore or drop state. Runners of a group share the partitions: run
as many as there are partitions. Each has its own transactional id (group, host, home directory
and a slot claimed with a lock file), so a runner restarted in place fences what its dead
predecessor left open. A record that cannot be decoded goes to the DLQ with the reason.
Repartition records are deleted once their offsets are committed (``delete_records``).

After each committed batch the alerts are also handed to ``on_alerts`` (the CLI stores them in
the ``alerts`` table, idempotently by id).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.bus.relay import skip_eof
from pipeline.errors import BusError
from pipeline.rules.engine import (
    Engine,
    Routed,
    State,
    decode_item,
    decode_routed,
    decode_state,
    encode_routed,
    encode_state,
    route_key,
    route_partition,
    tick,
    time_us,
)
from pipeline.rules.model import Alert
from pipeline.settings import Settings

log = logging.getLogger("causelog.rules")

_ALERT_ENCODER = msgspec.json.Encoder()
_ALERTS_DECODER = msgspec.json.Decoder(list[Alert])
# Suffix of the key, in the state topic, of the alerts of the last transaction in which a
# partition raised any (see ``on_restored``).
LAST_ALERTS_SUFFIX = " alerts"
# A chains partition counts as idle after this many consume() timeouts at its end.
IDLE_AFTER_BATCHES = 3
# Repartition records already consumed are deleted at most this often (seconds).
PURGE_EVERY = 30.0


@dataclass
class RunReport:
    """What a run did."""

    records: int = 0  # <prefix>.chains records
    alerts: int = 0
    rejected: int = 0
    commits: int = 0
    routed: int = 0  # repartition records consumed
    aborted: int = 0  # transactions aborted (a rebalance took partitions mid-batch)
    restored: dict[str, int] = field(default_factory=dict)  # <topic>[<partition>] -> watermark restored


def state_topic(settings: Settings, group: str) -> str:
    """The compacted topic of the rules state of ``group``."""
    return f"{settings.topic_prefix}.rules-state.{group}"


def repartition_topic(settings: Settings, group: str) -> str:
    """The topic routing correlation, absence and silence records by group, of ``group``."""
    return f"{settings.topic_prefix}.rules-repart.{group}"


def _ensure_topics(settings: Settings, partitions: int, state: str, repart: str, timeout: float) -> None:
    """Create the state and repartition topics with ``partitions`` partitions; refuse existing ones
    with another count (their records would be in the wrong partitions)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BusError(f"cannot list topics on {settings.kafka_bootstrap}: {exc}") from exc
    configs = {
        state: {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1",
                "max.message.bytes": str(16 * 1024 * 1024)},
        # Kept until consumed (the runner deletes what is committed), never by age.
        repart: {"retention.ms": "-1", "max.message.bytes": str(16 * 1024 * 1024)},
    }
    missing = []
    for name, config in configs.items():
        have = md.topics.get(name)
        if have is None or not have.partitions:
            missing.append(NewTopic(name, partitions, 1, config=config))
        elif len(have.partitions) != partitions:
            raise BusError(f"{name} has {len(have.partitions)} partitions, {settings.topic_chains} has {partitions}: "
                           f"delete {name} (and reset the group's offsets) to rebuild it")
    if not missing:
        return
    for name, fut in admin.create_topics(missing).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BusError(f"cannot create {name}: {exc}") from exc
    deadline = time.monotonic() + timeout
    names = [t.topic for t in missing]
    while time.monotonic() < deadline:  # producing before every partition has a leader fails
        md = admin.list_topics(timeout=timeout)
        if all(n in md.topics and md.topics[n].partitions and all(p.leader >= 0 for p in md.topics[n].partitions.values())
               for n in names):
            return
        time.sleep(0.2)
    raise BusError(f"{', '.join(names)} have no leader after {timeout:.0f}s")


def _read_state(settings: Settings, topic: str, partitions: set[int], timeout: float) -> dict[str, bytes]:
    """The latest committed record per key of ``partitions`` of the state topic."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "causelog-rules-restore",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    latest: dict[str, bytes] = {}
    try:
        highs: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                highs[p] = high
        if not highs:
            return latest
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in highs])
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
            if all(tp.offset >= highs[tp.partition]
                   for tp in consumer.position([TopicPartition(topic, p) for p in highs])):
                return latest
        raise BusError(f"timed out reading the rules state from {topic} partitions {sorted(highs)}")
    finally:
        consumer.close()


def _claim_slot(settings: Settings, ident: str) -> tuple[str, IO[bytes]]:
    """A transactional id of this runner: the same for a runner restarted in place (so it fences
    the transaction its dead predecessor left open), another for each runner running at once on
    this host and home (a lock file per slot, freed by the kernel when the process dies)."""
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    where = hashlib.sha256(f"{socket.gethostname()}\x1f{settings.home}".encode()).hexdigest()[:12]
    for slot in range(1024):
        f = (run / f"rules-{ident}-{slot}.lock").open("ab")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return f"causelog-rules-{ident}-{where}-{slot}", f
    raise BusError(f"more than 1024 rules runners in {run}")


class _Aborted(Exception):
    """The batch's transaction was aborted; nothing of it counts."""


class _Runner:
    """One runner of the group: its clients, the states of the partitions it owns, its progress."""

    def __init__(self, settings: Settings, engine: Engine, group: str, timeout: float, report: RunReport,
                 on_restored: Callable[[list[Alert]], None] | None, consumer_config: dict[str, Any] | None = None) -> None:
        self.s, self.engine, self.group, self.timeout, self.report = settings, engine, group, timeout, report
        self.consumer_config = consumer_config or {}
        self.on_restored = on_restored
        self.chains = settings.topic_chains
        self.repart = repartition_topic(settings, group)
        self.st_topic = state_topic(settings, group)
        self.states: dict[tuple[str, int], State] = {}  # owned partition -> committed state
        # Chains partitions at their end (EOF) since their last record -> since when (monotonic).
        self.at_end: dict[int, float] = {}
        self.idle_after = 0.0
        self.idle_sent: set[int] = set()  # chains partitions whose idle tick is committed
        self.nexts: dict[tuple[str, int], int] = {}  # owned partition -> committed offset
        self.ends: dict[int, int] = {}  # --once: end of each chains partition when first assigned
        self.joined = False
        self.purged_at = time.monotonic()
        self.failed: list[str] = []
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.lock: IO[bytes] | None = None
        self.admin: AdminClient | None = None

    # ------------------------------------------------------------------ setup

    def start(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.s.kafka_bootstrap})
        try:
            md = admin.list_topics(self.chains, timeout=self.timeout).topics.get(self.chains)
        except KafkaException as exc:
            raise BusError(f"cannot reach {self.s.kafka_bootstrap}: {exc}") from exc
        if md is None or md.error is not None or not md.partitions:
            raise BusError(f"topic {self.chains} does not exist on {self.s.kafka_bootstrap}")
        self.n = len(md.partitions)
        _ensure_topics(self.s, self.n, self.st_topic, self.repart, self.timeout)
        ident = hashlib.sha256(f"{self.s.topic_prefix}/{self.group}/{self.chains}".encode()).hexdigest()[:24]
        tid, self.lock = _claim_slot(self.s, ident)
        self.producer = Producer({
            "bootstrap.servers": self.s.kafka_bootstrap, "transactional.id": tid,
            "enable.idempotence": True, "acks": "all", "linger.ms": 20,
            # A dead runner's open transaction holds readers (and its partitions' next owner)
            # until it times out, unless it is restarted in place: keep that short.
            "transaction.timeout.ms": 30000, "message.max.bytes": 16 * 1024 * 1024,
        })
        self.consumer = Consumer({
            "bootstrap.servers": self.s.kafka_bootstrap, "group.id": self.group, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "isolation.level": "read_committed",
            "auto.offset.reset": "earliest", "enable.partition.eof": True,
            # A runner that died hands its partitions over after this (the default is 45 s).
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 2000,
            **self.consumer_config,
        })
        try:
            self.producer.init_transactions(self.timeout)
            self.consumer.subscribe([self.chains, self.repart], on_assign=self._on_assign,
                                    on_revoke=self._on_revoke, on_lost=self._on_revoke)
        except KafkaException as exc:
            raise BusError(f"cannot start the rules runner on {self.chains}: {exc}") from exc

    def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self.consumer.close()
        if self.lock is not None:
            self.lock.close()

    # ------------------------------------------------------------------ rebalance callbacks

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined = True
        if not partitions:
            return
        try:
            saved = _read_state(self.s, self.st_topic, {tp.partition for tp in partitions}, self.timeout)
            committed = consumer.committed(partitions, timeout=self.timeout)
        except KafkaException as exc:
            raise BusError(f"cannot restore the rules state of {_names(partitions)}: {exc}") from exc
        last: list[Alert] = []
        for tp in committed:
            key = f"{tp.topic}[{tp.partition}]"
            data = saved.get(key)
            state = decode_state(data) if data else State()
            self.states[(tp.topic, tp.partition)] = state
            self.nexts[(tp.topic, tp.partition)] = tp.offset
            if tp.topic == self.chains:  # at its end or not, its next EOF says
                self.at_end.pop(tp.partition, None)
                self.idle_sent.discard(tp.partition)
            if data:
                self.report.restored[key] = state.watermark
            alerts = saved.get(key + LAST_ALERTS_SUFFIX)
            if alerts:
                last.extend(_ALERTS_DECODER.decode(alerts))
            if tp.topic == self.chains and tp.partition not in self.ends:
                _, self.ends[tp.partition] = consumer.get_watermark_offsets(
                    TopicPartition(self.chains, tp.partition), timeout=self.timeout)
        log.info("assigned %s", _names(partitions))
        if last and self.on_restored is not None:
            self.on_restored(last)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No transaction is open between consume() calls: everything done is committed.
        for tp in partitions:
            self.states.pop((tp.topic, tp.partition), None)
            self.nexts.pop((tp.topic, tp.partition), None)
            if tp.topic == self.chains:
                self.at_end.pop(tp.partition, None)
                self.idle_sent.discard(tp.partition)
        log.info("revoked %s", _names(partitions))

    # ------------------------------------------------------------------ the loop

    def run(self, *, once: bool, stop: threading.Event | None, batch: int, within: float,
            on_alerts: Callable[[list[Alert]], None] | None, max_batches: int | None,
            on_ready: Callable[[RunReport], None] | None) -> RunReport:
        assert self.consumer is not None
        self.idle_after = 0.0 if once else IDLE_AFTER_BATCHES * within
        if on_ready is not None:
            on_ready(self.report)
        batches = 0
        while not (stop is not None and stop.is_set()):
            if max_batches is not None and batches >= max_batches:
                break
            try:
                msgs = self.consumer.consume(batch, within)
            except KafkaException as exc:
                raise BusError(f"cannot consume {self.chains}: {exc}") from exc
            records = self._records(msgs)
            if not records:
                self._mark_ends()
            if once:  # read to its end as of the start: as good as idle (more may come meanwhile)
                for _, p in self._read_to_start_end(records):
                    self.at_end.setdefault(p, 0.0)
            try:
                out = self._transaction(records)
            except _Aborted:
                continue
            if out is not None:
                if records:
                    batches += 1
                if out and on_alerts is not None:
                    on_alerts(out)
            self._purge()
            if once and self._finished():
                break
        return self.report

    def _records(self, msgs: list[Message]) -> list[Message]:
        """The records of ``msgs`` of partitions this runner owns; notes the chains partitions at their end."""
        records = []
        for m in msgs:
            p = m.partition() or 0
            err = m.error()
            if err is not None and err.code() == KafkaError._MAX_POLL_EXCEEDED:
                # Too long between polls: the group moved on (a commit now fails); it rejoins.
                log.warning("left the consumer group (%s); rejoining", err)
                continue
            if skip_eof(m):
                if m.topic() == self.chains:
                    self.at_end.setdefault(p, time.monotonic())
                continue
            if (m.topic() or "", p) not in self.states:
                continue  # fetched before a rebalance took the partition: its next owner reads it
            if m.topic() == self.chains:
                self.at_end.pop(p, None)
                self.idle_sent.discard(p)
            records.append(m)
        return records

    def _mark_ends(self) -> None:
        """Chains partitions read to their end without an EOF event (librdkafka sends none for a
        partition assigned again at the offset where it had already sent one) count as at the end."""
        assert self.consumer is not None
        todo = [p for t, p in self.states if t == self.chains and p not in self.at_end and p not in self.idle_sent]
        if not todo:
            return
        try:
            positions = self.consumer.position([TopicPartition(self.chains, p) for p in todo])
            for tp in positions:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(self.chains, tp.partition), cached=True)
                if high < 0:
                    low, high = self.consumer.get_watermark_offsets(TopicPartition(self.chains, tp.partition),
                                                                    timeout=self.timeout)
                pos = tp.offset if tp.offset >= 0 else self.nexts.get((self.chains, tp.partition), -1)
                if pos >= high or (pos < 0 and high <= low):
                    self.at_end.setdefault(tp.partition, time.monotonic())
        except KafkaException as exc:
            raise BusError(f"cannot read the rules runner's position on {self.chains}: {exc}") from exc

    def _read_to_start_end(self, records: list[Message]) -> list[tuple[str, int]]:
        """--once: chains partitions read to their end as of the start, with no record in ``records``."""
        busy = {(m.topic(), m.partition()) for m in records}
        return [(t, p) for (t, p), o in self.nexts.items()
                if t == self.chains and o >= self.ends.get(p, 0) > 0 and (t, p) not in busy]

    def _transaction(self, records: list[Message]) -> list[Alert] | None:
        """Evaluate ``records`` and commit everything they produce with their offsets; None when
        there was nothing to do."""
        assert self.producer is not None and self.consumer is not None
        # Idle only after a while at the end: the other partitions' records of the same moment (the
        # worker commits them in one transaction) reach their runners first, so a partition
        # coming back from idle does not find the others' watermark past its events.
        now = time.monotonic()
        idle = {p for p, since in self.at_end.items()
                if now - since >= self.idle_after and p not in self.idle_sent and (self.chains, p) in self.states}
        moved = {} if records else self._moved()
        if not records and not idle and not moved:
            return None
        # Work on copies: an aborted transaction must leave the committed states untouched.
        work = {k: decode_state(encode_state(self.states[k])) for k in {(m.topic() or "", m.partition() or 0)
                                                                         for m in records}}
        for p in idle:
            work.setdefault((self.chains, p), self.states[(self.chains, p)])
        positions: dict[tuple[str, int], int] = dict(moved)
        raised: dict[tuple[str, int], list[Alert]] = {}
        self.failed.clear()
        in_txn = False
        try:
            self.producer.begin_transaction()
            in_txn = True
            routes: list[Routed] = []
            rejected = 0
            for m in records:
                k = (m.topic() or "", m.partition() or 0)
                positions[k] = (m.offset() or 0) + 1
                if k[0] == self.chains:
                    rejected += self._stage1(m, work, raised, routes)
                else:
                    rejected += self._stage2(m, work, raised, routes)
            for r in self.engine.coalesce(routes):
                self._send(self.repart, encode_routed(r), route_key(r), route_partition(r, self.n))
            self._ticks(work, idle)
            out = [a for alerts in raised.values() for a in alerts]
            for a in out:
                self._send(self.s.topic_alerts, _ALERT_ENCODER.encode(a), a.id.encode())
            for (topic, p), st in work.items():
                self._send(self.st_topic, encode_state(st), f"{topic}[{p}]".encode(), p)
            for (topic, p), alerts in raised.items():
                if alerts:
                    self._send(self.st_topic, _ALERT_ENCODER.encode(alerts),
                               f"{topic}[{p}]{LAST_ALERTS_SUFFIX}".encode(), p)
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(positions.items())]
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(),
                                                          self.timeout)
            self.producer.commit_transaction(self.timeout)
            in_txn = False
        except KafkaException as exc:
            self._abort(exc, in_txn, records)
        if self.failed:
            raise BusError(f"{len(self.failed)} records of the rules runner failed after commit: {self.failed[0]}")
        self.states.update(work)
        self.nexts.update(positions)
        self.idle_sent |= idle
        rep = self.report
        rep.records += sum(1 for m in records if m.topic() == self.chains)
        rep.routed += sum(1 for m in records if m.topic() != self.chains)
        rep.alerts += len(out)
        rep.rejected += rejected
        rep.commits += 1 if records else 0
        return out

    def _abort(self, exc: KafkaException, in_txn: bool, records: list[Message]) -> None:
        """Abort the batch's transaction; re-read its records from the committed offsets (if this
        runner still owns them: a rebalance that took them makes the commit fail, KIP-447)."""
        assert self.producer is not None and self.consumer is not None
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if in_txn:
            try:
                self.producer.abort_transaction(self.timeout)
            except KafkaException as again:
                raise BusError(f"Kafka refused a transaction of the rules runner and then its abort (nothing of "
                               f"it is visible; restart to resume from the committed offsets): {exc}; {again}") from exc
        if err is not None and err.fatal():
            raise BusError(f"Kafka refused a transaction of the rules runner (nothing of it is visible; restart to "
                           f"resume from the committed offsets): {exc}") from exc
        log.warning("transaction aborted, re-reading from the committed offsets: %s", exc)
        self.report.aborted += 1
        for t, p in {(m.topic() or "", m.partition() or 0) for m in records}:
            committed = self.nexts.get((t, p), -1)
            try:
                self.consumer.seek(TopicPartition(t, p, committed if committed >= 0 else OFFSET_BEGINNING))
            except KafkaException as again:  # going on could commit past records never evaluated
                raise BusError(f"cannot re-read {t}[{p}] after an aborted transaction: {again}") from exc
        raise _Aborted from exc

    def _stage1(self, m: Message, work: dict[tuple[str, int], State], raised: dict[tuple[str, int], list[Alert]],
                routes: list[Routed]) -> int:
        k = (self.chains, m.partition() or 0)
        try:
            item = decode_item(m.value() or b"")
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            self._reject(m, f"not a chains record: {exc}")
            return 1
        s = work[k]
        work[k], alerts, more = self.engine.route(s, item, max(s.watermark, time_us(item.event["time"])))
        raised.setdefault(k, []).extend(alerts)
        routes.extend(more)
        return 0

    def _stage2(self, m: Message, work: dict[tuple[str, int], State], raised: dict[tuple[str, int], list[Alert]],
                routes: list[Routed]) -> int:
        k = (self.repart, m.partition() or 0)
        try:
            routed = decode_routed(m.value() or b"")
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reject(m, f"not a routed rules record: {exc}")
            return 1
        work[k], alerts, more = self.engine.receive(work[k], routed, self.n)
        raised.setdefault(k, []).extend(alerts)
        routes.extend(more)  # alerts feeding a correlation whose group lives elsewhere
        return 0

    def _ticks(self, work: dict[tuple[str, int], State], idle: set[int]) -> None:
        """Every repartition partition hears how far each chains partition of the batch has got."""
        for (topic, p), st in work.items():
            if topic != self.chains:
                continue
            data = encode_routed(tick(p, st.watermark, p in idle))
            for r in range(self.n):
                self._send(self.repart, data, b"", r)

    def _reject(self, m: Message, why: str) -> None:
        origin = f"{m.topic()}[{m.partition()}]@{m.offset()}"
        self._send(self.s.topic_dlq, m.value() or b"", origin.encode(), None, [
            ("reason", b"invalid_value"), ("error", f"{origin}: {why}".encode()),
            ("origin", origin.encode()), ("source", b"rules")])

    def _send(self, topic: str, value: bytes, key: bytes, partition: int | None = None, headers: Any = None) -> None:
        assert self.producer is not None
        kw: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._delivered, **kw)
                return
            except BufferError:
                self.producer.poll(0.1)

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.failed.append(str(err))

    def _moved(self) -> dict[tuple[str, int], int]:
        """Idle: positions that moved past what was committed without a record (the markers of the
        transactions on both topics), so the runner's lag reads 0 when it is done."""
        assert self.consumer is not None
        owned = [TopicPartition(t, p) for t, p in self.nexts]
        if not owned:
            return {}
        try:
            positions = self.consumer.position(owned)
        except KafkaException as exc:
            raise BusError(f"cannot read the rules runner's position: {exc}") from exc
        # Every record consumed is committed (or was sought back to after an abort): skips nothing.
        return {(tp.topic, tp.partition): tp.offset for tp in positions
                if tp.offset >= 0 and tp.offset > self.nexts.get((tp.topic, tp.partition), -1)}

    def _purge(self) -> None:
        """Delete the repartition records before the committed offsets (they are consumed)."""
        if time.monotonic() - self.purged_at < PURGE_EVERY:
            return
        self.purged_at = time.monotonic()
        done = [TopicPartition(t, p, o) for (t, p), o in self.nexts.items() if t == self.repart and o > 0]
        if not done:
            return
        if self.admin is None:
            self.admin = AdminClient({"bootstrap.servers": self.s.kafka_bootstrap})
        try:
            for fut in self.admin.delete_records(done, request_timeout=self.timeout).values():
                fut.result(self.timeout)
        except KafkaException as exc:  # only space: the records are consumed either way
            log.warning("cannot delete consumed records of %s: %s", self.repart, exc)

    def _finished(self) -> bool:
        """--once: the chains partitions owned are read to their end as of their assignment, their
        last ticks are committed, and the repartition partitions owned are read to their end."""
        assert self.consumer is not None
        if not self.joined:
            return False
        owned = list(self.nexts)
        # A chains partition whose idle tick is committed is at its end (no record since its EOF).
        if any(t == self.chains and p not in self.idle_sent for t, p in owned):
            return False
        for t, p in owned:
            if t == self.repart:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(t, p), timeout=self.timeout)
                if self.nexts[(t, p)] < high:
                    return False
        return True


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)


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
    consumer_config: dict[str, Any] | None = None,
) -> RunReport:
    """Evaluate ``engine`` over ``<prefix>.chains`` as one runner of ``group`` (default
    ``<CAUSELOG_GROUP>-rules``) until ``stop`` (or, with ``once``, until the partitions it owns are
    read to their end as of their assignment and everything routed from them is evaluated).
    ``on_ready`` is called once the clients are up and consuming starts; ``max_batches`` stops
    after that many batches with records.

    ``report`` (default a new one) is updated after every committed batch: metrics read it live.
    ``on_restored`` gets, whenever partitions are assigned, the alerts of the last committed
    transaction in which each raised any: a runner killed after its commit but before
    ``on_alerts`` finished would otherwise never hand them over (``on_alerts`` must be idempotent by
    alert id: the table is). ``consumer_config``: librdkafka settings over the consumer's own
    (``session.timeout.ms``, ``max.poll.interval.ms`` ...)."""
    runner = _Runner(settings, engine, group or f"{settings.group}-rules", timeout,
                     report if report is not None else RunReport(), on_restored, consumer_config)
    try:
        runner.start()
        return runner.run(once=once, stop=stop, batch=batch, within=within, on_alerts=on_alerts,
                          max_batches=max_batches, on_ready=on_ready)
    finally:
        runner.close()
