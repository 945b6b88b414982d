"""The worker's ingest loop: a confluent-kafka consumer that takes records in batches.

Why not a Faust agent: Faust hands records to agents one at a time through its event loop
(two tasks and an ``asyncio.wait`` per record); measured here it tops out near 3k events/s, a
fifth of a plain consumer, whatever the batch size (see README, Performance). This loop keeps
Faust's role (worker process, services, web API) and takes whole batches from librdkafka.

Guarantees: offsets are committed only at a checkpoint, once every batch taken so far is written
(rejections acknowledged on the DLQ, events and chains stored), in one Kafka transaction with the
changelog of the correlation state they produced (``<prefix>.correlation.<group>``) and the
``<prefix>.chains`` records of the events they stored (for the rules runner).
Checkpoints run every ``CAUSELOG_CHECKPOINT_SECONDS``, when the input is drained, before a
partition is revoked and on stop. If a batch cannot be completed the process exits at once without committing, so a restart
re-reads from the last checkpoint and the store's id dedup keeps one copy. Rebalances happen
inside ``consume()``, between batches, so no batch is ever in flight when partitions move.
``isolation.level=read_committed`` hides records of aborted source transactions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.errors import BusError
from pipeline.settings import Settings
from pipeline.store.writer import Position, WriteResult
from pipeline.stream.ingest import BatchHandler, Record
from pipeline.stream.signer import CheckpointSigner

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
    """Consume ``settings.topic_changes`` in batches on a thread and hand them to ``handler``.

    Two batches overlap: while one is being written (the store releases the GIL), the next is
    fetched and decoded. Offsets of a batch are committed once its write returned, before the
    next batch is written, and before any partition is revoked.
    """

    def __init__(
        self,
        settings: Settings,
        handler: BatchHandler,
        *,
        abort: Callable[[str], None] | None = None,
        signer: CheckpointSigner | None = None,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.handler = handler
        self.abort = abort or exit_now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="causelog-ingest", daemon=True)
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="causelog-write")
        self._inflight: tuple[Future[object], Sequence[Record]] | None = None
        self._consumer: Consumer | None = None
        self.assigned: set[int] = set()
        # Offsets of batches written but not committed yet (committed at the next checkpoint).
        self._written: dict[tuple[str, int], int] = {}
        # <prefix>.chains records of batches written but not committed yet, per input partition
        # (committed in the same transaction as that partition's offsets).
        self._chains: dict[int, list[tuple[bytes, bytes]]] = {}
        self._last_checkpoint = time.monotonic()

    def start(self) -> None:
        """Start consuming in the background."""
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the batches in hand, commit them, leave the group."""
        self._stop.set()
        self._thread.join(timeout)

    def _settle(self) -> None:
        """Wait for the batch being written (abort if it failed); its offsets become committable."""
        if self._inflight is None:
            return
        future, records = self._inflight
        self._inflight = None
        try:
            result = future.result()
        except BaseException as exc:  # anything: the batch must not be committed
            self.abort(f"batch of {len(records)} records from {records[0].position} failed: {exc!r}")
            raise SystemExit(EXIT_BATCH_FAILED) from exc
        self._written_batch(records, result)

    def _written_batch(self, records: Sequence[Record], result: object) -> None:
        """A batch is written: its offsets and its chains records become committable."""
        for tp in next_offsets(records):
            self._written[(tp.topic, tp.partition)] = tp.offset
        for p, recs in (result.chains if isinstance(result, WriteResult) else {}).items():
            self._chains.setdefault(p, []).extend(recs)

    def _checkpoint(self, partitions: set[int] | None = None, *, final: bool = False) -> None:
        """Settle, then commit the correlation changelog and the written offsets (of
        ``partitions``, default all) in one transaction; then sign the logs that are due (all
        that grew when ``final``: stop or revocation)."""
        self._settle()
        self._last_checkpoint = time.monotonic()
        correlation = self.handler.correlation
        commit = [TopicPartition(t, p, o) for (t, p), o in sorted(self._written.items())
                  if partitions is None or p in partitions]
        records = correlation.collect(partitions) if correlation is not None else {}
        chains = {p: r for p, r in self._chains.items() if partitions is None or p in partitions}
        if commit or records or chains:
            self._commit(commit, records, chains)
        if self.signer is not None and correlation is not None and correlation.changelog is not None:
            # Nothing is being written now: the logs are exactly what was just committed.
            try:
                self.signer.committed(correlation.log_heads(partitions), force=final)
            except Exception:  # signing must never stop ingestion; the next round retries
                log.exception("signing checkpoints failed")

    def _commit(self, commit: list[TopicPartition], records: dict[int, list[tuple[bytes, bytes | None]]],
                chains: dict[int, list[tuple[bytes, bytes]]] | None = None) -> None:
        correlation = self.handler.correlation
        assert self._consumer is not None
        try:
            if correlation is not None and correlation.changelog is not None:
                correlation.changelog.commit(records, commit, self._consumer.consumer_group_metadata(),
                                             chains=chains)
            elif commit:
                self._consumer.commit(offsets=commit, asynchronous=False)
        except BaseException as exc:
            self.abort(f"checkpoint of {len(commit)} partitions failed: {exc!r}")
            raise SystemExit(EXIT_BATCH_FAILED) from exc
        for tp in commit:
            self._written.pop((tp.topic, tp.partition), None)
        for p in chains or {}:
            self._chains.pop(p, None)

    def _run(self) -> None:
        s = self.settings
        try:
            consumer = self._consumer = Consumer(consumer_config(s))
            consumer.subscribe([s.topic_changes], on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
        except KafkaException as exc:
            self.abort(f"cannot subscribe to {s.topic_changes} on {s.kafka_bootstrap}: {exc}")
            return
        try:
            while not self._stop.is_set():
                records = self._take(consumer)
                prepared = self.handler.prepare(records) if records else None
                self._settle()
                if prepared is not None:
                    self._inflight = (self._writes.submit(self.handler.finish, prepared), records)
                # Also checkpoint as soon as the input is drained, so an idle worker has no lag.
                idle = not records and (self._inflight is not None or bool(self._written))
                if idle or time.monotonic() - self._last_checkpoint >= s.checkpoint_seconds:
                    self._checkpoint()
            self._checkpoint(final=True)
        except (KafkaException, BusError) as exc:
            self.abort(f"Kafka consumer failed: {exc}")
        except SystemExit:
            return
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()

    def _take(self, consumer: Consumer) -> list[Record]:
        s = self.settings
        records: list[Record] = []
        for m in consumer.consume(s.batch_size, s.batch_within):
            err = m.error()
            if err is None:
                records.append(Record(m.value(), Position(m.topic(), m.partition(), m.offset())))  # type: ignore[arg-type]
            elif err.fatal():
                raise BusError(f"fatal Kafka error on {m.topic()}[{m.partition()}]: {err}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("Kafka reported %s on %s[%s]", err, m.topic(), m.partition())
        return records

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {p.partition for p in partitions}
        log.info("assigned %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs inside consume() on the ingest thread: checkpoint and commit what we wrote while
        # we still own it; the next owner loads that changelog.
        revoked = {p.partition for p in partitions}
        self._checkpoint(revoked, final=True)
        if self.handler.correlation is not None:
            self.handler.correlation.drop(revoked)
        self.assigned -= revoked
        log.info("revoked %s", sorted(p.partition for p in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not revoked): committing is no longer possible; the new owner re-reads, the
        # store's id dedup keeps one copy. The write in hand still has to finish first.
        if self._inflight is not None:
            future, records = self._inflight
            self._inflight = None
            try:
                self._written_batch(records, future.result())
            except BaseException as exc:
                self.abort(f"batch of {len(records)} records from {records[0].position} failed: {exc!r}")
        lost = {p.partition for p in partitions}
        for key in [k for k in self._written if k[1] in lost]:
            del self._written[key]
        for p in lost:
            self._chains.pop(p, None)
        if self.handler.correlation is not None:
            self.handler.correlation.drop(lost)
        self.assigned -= lost
        log.warning("lost %s", sorted(p.partition for p in partitions))


def next_offsets(records: Sequence[Record]) -> list[TopicPartition]:
    """The offsets to commit after ``records``: last offset + 1 per topic-partition."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.position.topic, r.position.partition)
        if r.position.offset >= last.get(key, -1):
            last[key] = r.position.offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]


def exit_now(reason: str) -> None:
    """Stop the process at once, before anything else is committed (exit code 75, EX_TEMPFAIL)."""
    log.critical("%s; stopping without committing", reason)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)
