"""The correlation changelog in Kafka: topic ``<prefix>.correlation.<group>``, compacted, one
partition per partition of ``<prefix>.changes`` (like a Faust table's changelog topic).

At a checkpoint the worker writes, for each input partition, the changelog records of what its
correlation state changed (:meth:`pipeline.correlate.partition.PartitionCorrelator.changelog`) to
the same partition number, **in one Kafka transaction together with the consumer offsets** of
the input it covers (``send_offsets_to_transaction``). So the state a worker restores and the
offset it resumes from always belong together: a crash before the commit leaves neither, a crash
after leaves both. Compaction keeps the latest record per key, so the topic holds about one
record per live key.

The transactional id is derived from the group, the host name, the worker's home directory and
its API port, so a worker restarted in place fences (aborts) the open transaction of the one that died instead
of leaving readers waiting for it to time out. Workers elsewhere are fenced by the consumer group
generation (KIP-447).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.bus.kafka import CHAINS_MAX_MESSAGE_BYTES
from pipeline.correlate.partition import ChangelogRecord
from pipeline.errors import BusError
from pipeline.settings import Settings

log = logging.getLogger("causelog.checkpoint")
T = TypeVar("T")

# Seconds one transactional call of a checkpoint may take before the checkpoint counts as failed.
COMMIT_TIMEOUT = 10.0


_NOT_READY = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
})


def _retrying(call: Callable[[], T], *, also: frozenset[int] = frozenset(), deadline: float | None = None) -> T:
    """``call()``, repeated while it fails with an error Kafka calls retriable (or one of
    ``also``), until ``deadline`` (default: 30 s from now)."""
    end = deadline if deadline is not None else time.monotonic() + 30
    delay = 0.05
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is None or not (err.retriable() or err.code() in also) or time.monotonic() + delay > end:
                raise
            log.info("retrying after %s", err)
            time.sleep(delay)
            delay = min(1.0, delay * 2)


class Changelog:
    """Transactional writer and reader of ``settings.topic_correlation``."""

    def __init__(self, settings: Settings, *, timeout: float = 60.0) -> None:
        self.settings = settings
        self.topic = settings.topic_correlation
        self.timeout = timeout
        self._producer: Producer | None = None
        self.committed_at: float | None = None  # time.time() of the last committed transaction (/metrics)
        self._commits = 0

    @property
    def transactional_id(self) -> str:
        """Stable per group, host, worker home and API port (two live workers on one host cannot
        share a port): a worker restarted in place fences its dead predecessor, while live
        workers never fence each other, in containers with the same home path either."""
        s = self.settings
        where = hashlib.sha256(f"{socket.gethostname()}\x1f{s.home}\x1f{s.api_port}".encode()).hexdigest()[:12]
        return f"{self.settings.group}-correlation-{where}"

    def _ready(self) -> Producer:
        if self._producer is None:
            try:
                producer = Producer({
                    "bootstrap.servers": self.settings.kafka_bootstrap,
                    "transactional.id": self.transactional_id,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "batch.num.messages": 10000,
                    "queue.buffering.max.messages": 1000000,
                    # A checkpoint is short; a dead worker's open transaction should not hold
                    # readers (and its partitions' next owner) for long.
                    "transaction.timeout.ms": 30000,
                    # <prefix>.chains carries whole envelopes (up to the changes topic's limit).
                    "message.max.bytes": CHAINS_MAX_MESSAGE_BYTES,
                })
                producer.init_transactions(self.timeout)
            except KafkaException as exc:
                raise BusError(f"cannot start the correlation changelog producer on "
                               f"{self.settings.kafka_bootstrap}: {exc}") from exc
            self._producer = producer
        return self._producer

    def reset(self) -> None:
        """Forget the producer (after a failed transaction or a broker restart): the next
        commit starts a fresh one with the same transactional id, which fences this one and
        aborts whatever transaction it left open."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                producer.purge()

    def commit(
        self,
        records: Mapping[int, Sequence[ChangelogRecord]],
        offsets: Sequence[TopicPartition] = (),
        group_metadata: Any = None,
        *,
        chains: Mapping[int, Sequence[ChangelogRecord]] | None = None,
    ) -> int:
        """Write ``records`` (per input partition), the ``chains`` records of the events stored
        (per input partition, to the same partition of ``<prefix>.chains``, in order) and, when
        given, commit the consumer ``offsets`` of ``group_metadata``'s group, all in one
        transaction. Returns the number of changelog records written; ``BusError`` if the
        transaction did not commit (nothing of it counts)."""
        n = sum(len(r) for r in records.values())
        chains = chains or {}
        if n == 0 and not offsets and not any(chains.values()):
            return 0
        producer = self._ready()
        try:
            producer.begin_transaction()
            for topic, per_partition in ((self.topic, records), (self.settings.topic_chains, chains)):
                for partition, recs in per_partition.items():
                    for key, value in recs:
                        while True:
                            try:
                                producer.produce(topic, value=value, key=key, partition=partition)
                                break
                            except BufferError:
                                producer.poll(0.05)
            self._commits += 1
            if self._commits == self.settings.fault_kill_in_checkpoint:
                # Test only (CAUSELOG_FAULT_KILL_IN_CHECKPOINT): die with the transaction open.
                producer.flush(self.timeout)
                os.kill(os.getpid(), signal.SIGKILL)
            # Short waits: after a broker restart the consumer's group generation may be gone, and
            # the consumer cannot rejoin while its thread waits here; failing fast lets the worker
            # rewind (pipeline.stream.consumer) instead of waiting on a generation that is gone.
            wait = min(self.timeout, COMMIT_TIMEOUT)
            deadline = time.monotonic() + 2 * wait
            if offsets:
                _retrying(lambda: producer.send_offsets_to_transaction(list(offsets), group_metadata, wait),
                          deadline=deadline)
            _retrying(lambda: producer.commit_transaction(wait), deadline=deadline)
            self.committed_at = time.time()
        except KafkaException as exc:
            where = ", ".join(f"{self.topic}[{p}]" for p in sorted(records)) or self.topic
            raise BusError(f"correlation checkpoint to {where} failed: {exc}") from exc
        return n

    def load(self, partition: int) -> list[ChangelogRecord]:
        """Every committed record of ``partition``, in order (read_committed, to the end)."""
        consumer = Consumer({
            "bootstrap.servers": self.settings.kafka_bootstrap,
            "group.id": f"{self.settings.group}-changelog-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 64 * 1024 * 1024,
        })
        out: list[ChangelogRecord] = []
        try:
            tp = TopicPartition(self.topic, partition)
            try:
                # Right after the topic was created the broker may not lead it yet: wait for it.
                lo, hi = _retrying(lambda: consumer.get_watermark_offsets(tp, timeout=self.timeout),
                                   also=_NOT_READY, deadline=time.monotonic() + self.timeout)
            except KafkaException as exc:
                raise BusError(f"cannot read {self.topic}[{partition}] on {self.settings.kafka_bootstrap}: {exc}") from exc
            if hi <= lo:
                return out
            consumer.assign([TopicPartition(self.topic, partition, lo)])
            deadline = time.monotonic() + self.timeout
            while True:
                # consume() waits its whole timeout unless the batch fills: ask often, for little.
                msgs = consumer.consume(10000, 0.1)
                if not msgs and time.monotonic() > deadline:
                    raise BusError(f"reading {self.topic}[{partition}]: end not reached within {self.timeout:.0f}s "
                                   "(an open transaction of a dead worker? it times out after 30 s)")
                for m in msgs:
                    err = m.error()
                    if err is None:
                        out.append((m.key() or b"", m.value()))
                        continue
                    if err.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise BusError(f"reading {self.topic}[{partition}]: {err}")
                if msgs:
                    deadline = time.monotonic() + self.timeout
        finally:
            consumer.close()

    def check_partitions(self) -> None:
        """Raise ``BusError`` unless the changelog has a partition for every input partition
        (someone added partitions to ``changes`` after the worker group started)."""
        consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": "causelog-metadata"})
        try:
            md = consumer.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise BusError(f"cannot list topics on {self.settings.kafka_bootstrap}: {exc}") from exc
        finally:
            consumer.close()
        changes = md.topics.get(self.settings.topic_changes)
        n_in = len(changes.partitions) if changes is not None else 0
        # The chains records of changes[p] go to chains[p] (same order, same scopes).
        for name in (self.topic, self.settings.topic_chains):
            state = md.topics.get(name)
            n_state = len(state.partitions) if state is not None else 0
            if n_state < n_in:
                raise BusError(
                    f"{name} has {n_state} partitions but {self.settings.topic_changes} has {n_in}; "
                    f"add partitions to {name} (kafka-topics.sh --alter --partitions {n_in}) before starting workers"
                )
