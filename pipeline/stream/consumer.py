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
partition is revoked and on stop. Rebalances happen
inside ``consume()``, between batches, so no batch is ever in flight when partitions move.
``isolation.level=read_committed`` hides records of aborted source transactions.

Failures (see README, "What the worker does with bad input"):

- a bad record never stops the loop: :mod:`pipeline.stream.ingest` rejects it to the DLQ;
- store write failures are retried with backoff inside the batch (nothing is committed meanwhile);
- a Kafka failure (broker gone, a checkpoint transaction that cannot commit, the group session
  lost while the broker was away) **rewinds**: the consumer is closed without committing, the
  correlation state is dropped, and after a backoff a fresh consumer rejoins the group and
  re-reads from the last checkpoint (the store's id dedup keeps one copy). Before, a checkpoint
  blocked in ``send_offsets_to_transaction`` for a group generation that no longer existed kept
  the worker up and idle forever after a broker restart;
- anything else (a bug) stops the process with exit code 75 after logging the cause, so a
  supervisor restarts it; the ingest thread never dies silently.

:attr:`BatchConsumer.health` says what is wrong, for ``GET /health``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.errors import BusError, CauselogError
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
        # The periodic checkpoint's Kafka transaction runs here, while the loop goes on with the
        # next batches (it waited ~0.5-1 s for the broker's acks of a checkpoint's chains records,
        # the worst of the produced -> queryable delay at 5,000 events/s). One at a time; the
        # next checkpoint, a revocation, a rewind and stop wait for it first.
        self._checkpoints = ThreadPoolExecutor(1, thread_name_prefix="causelog-checkpoint")
        self._committing: Future[None] | None = None
        self._consumer: Consumer | None = None
        self.assigned: set[int] = set()
        # Offsets of batches written but not committed yet (committed at the next checkpoint).
        self._written: dict[tuple[str, int], int] = {}
        # <prefix>.chains records of batches written but not committed yet, per input partition
        # (committed in the same transaction as that partition's offsets).
        self._chains: dict[int, list[tuple[bytes, bytes]]] = {}
        self._last_checkpoint = time.monotonic()
        # Health: why ingestion is not running or not progressing (None: it is), since when, and
        # per partition the wall time its committed offset last advanced.
        self.failure: str | None = None
        self.problem: str | None = None
        self.problem_since: float | None = None
        self.committed_at: dict[int, float] = {}
        # Signing checkpoints failing (ingestion goes on, but /health says so): why, since when.
        self.signing_error: str | None = None
        self.signing_since: float | None = None
        self.rewinds = 0
        self._no_commit = False  # set while a failed consumer closes: its callbacks must not commit
        # Watchdog: when the loop last went round, and what it is doing.
        self.beat = time.monotonic()
        self.phase = "starting"
        self._stack_logged = False

    def start(self) -> None:
        """Start consuming in the background, and the watchdog that stops a stuck loop."""
        self._thread.start()
        threading.Thread(target=self._watch, name="causelog-ingest-watchdog", daemon=True).start()

    def _watch(self) -> None:
        """Exit (75, via ``abort``) when the loop has been stuck past :attr:`stuck_after`: every
        wait inside it is bounded, so a loop that does not come round is wedged in a client
        library, and a restart (which fences the open transaction) is what gets it going again."""
        while not self._stop.wait(5.0):
            if self.failure is not None or not self._thread.is_alive():
                return
            problems = [p for p in self.health() if p.startswith("ingest loop stuck")]
            if problems and time.monotonic() - self.beat > 1.5 * self.stuck_after:
                self.failure = problems[0]
                self.abort(problems[0])
                return

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the batches in hand, commit them, leave the group."""
        self._stop.set()
        self._thread.join(timeout)

    def health(self) -> list[str]:
        """What is wrong with ingestion right now (empty: it runs)."""
        problems = []
        if self.failure is not None:
            problems.append(f"ingest loop stopped: {self.failure}")
        elif self._thread.ident is not None and not self._thread.is_alive() and not self._stop.is_set():
            problems.append("ingest loop is not running (thread ended)")
        if self.problem is not None and self.problem_since is not None:
            problems.append(f"ingest paused for {time.time() - self.problem_since:.0f}s, retrying: {self.problem}")
        if self.signing_error is not None and self.signing_since is not None:
            problems.append(f"signing checkpoints failing for {time.time() - self.signing_since:.0f}s: "
                            f"{self.signing_error}")
        stuck = time.monotonic() - self.beat
        correlation = self.handler.correlation
        # Waits with their own reporting: store retries, and loading a partition's changelog
        # (which may legitimately take long, and fails on its own when it stops progressing).
        excused = bool(self.handler.counters.store_failing_since) or (
            correlation is not None and correlation.loading is not None)
        if self.failure is None and self._thread.is_alive() and stuck > self.stuck_after and not excused:
            problems.append(f"ingest loop stuck for {stuck:.0f}s in {self.phase}")
            if not self._stack_logged and self._thread.ident is not None:
                self._stack_logged = True
                frame = sys._current_frames().get(self._thread.ident)
                where = "".join(traceback.format_stack(frame)) if frame is not None else "?"
                log.error("ingest loop stuck for %.0fs in %s:\n%s", stuck, self.phase, where)
        return problems

    @property
    def stuck_after(self) -> float:
        """Seconds without a round of the loop (store retries aside) after which it counts as stuck:
        longer than any bounded wait inside it (a checkpoint gives up after 20 s)."""
        return max(60.0, 6 * self.settings.checkpoint_seconds)

    def _at(self, phase: str) -> None:
        self.phase = phase
        self.beat = time.monotonic()
        self._stack_logged = False

    def _settle(self) -> None:
        """Wait for the batch being written (abort if it failed); its offsets become committable."""
        if self._inflight is None:
            return
        future, records = self._inflight
        self._inflight = None
        try:
            result = future.result()
        except BaseException as exc:  # anything: the batch must not be committed
            raise BatchFailed(f"batch of {len(records)} records from {records[0].position} failed: {exc!r}") from exc
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
        that grew when ``final``: stop or revocation).

        A periodic checkpoint (not ``final``, all partitions) commits in the background: what it
        commits is taken out of the pending offsets and chains records here, so batches written
        meanwhile wait for the next one. A failed background commit raises at the next
        checkpoint (or :meth:`_check_committing`), and the loop rewinds as after a failed
        synchronous one."""
        self._settle()
        self._await_commit()
        self._last_checkpoint = time.monotonic()
        correlation = self.handler.correlation
        commit = [TopicPartition(t, p, o) for (t, p), o in sorted(self._written.items())
                  if partitions is None or p in partitions]
        records = correlation.collect(partitions) if correlation is not None else {}
        chains = {p: r for p, r in self._chains.items() if partitions is None or p in partitions}
        for tp in commit:
            del self._written[(tp.topic, tp.partition)]
        for p in chains:
            del self._chains[p]
        sign = self.signer is not None and correlation is not None and correlation.changelog is not None
        # Nothing is being written now: the logs are exactly what this checkpoint commits.
        heads = correlation.log_heads(partitions) if sign and correlation is not None else None
        if final or partitions is not None or not (commit or records or chains):
            self._commit_and_sign(commit, records, chains, heads, final)
        else:
            self._committing = self._checkpoints.submit(self._commit_and_sign, commit, records, chains, heads, final)

    def _commit_and_sign(self, commit: list[TopicPartition], records: dict[int, list[tuple[bytes, bytes | None]]],
                         chains: dict[int, list[tuple[bytes, bytes]]],
                         heads: dict[int, tuple[int, bytes]] | None, final: bool) -> None:
        if commit or records or chains:
            self._commit(commit, records, chains)
        if self.signer is not None and heads is not None:
            try:
                self.signer.committed(heads, force=final)
                self.signing_error = self.signing_since = None
            except Exception as exc:  # signing must never stop ingestion; the next round retries
                log.exception("signing checkpoints failed")
                self.signing_error = f"{exc!r}"[:300]
                self.signing_since = self.signing_since or time.time()

    def _await_commit(self) -> None:
        """Wait for the background checkpoint, if any; raise what it raised."""
        if self._committing is None:
            return
        future, self._committing = self._committing, None
        future.result()

    def _check_committing(self) -> None:
        """Raise now if the background checkpoint failed (the loop rewinds), without waiting."""
        if self._committing is not None and self._committing.done():
            self._await_commit()

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
        except (KafkaException, BusError) as exc:
            # The changelog records collected above are gone with the aborted transaction: the
            # in-memory state is ahead of the changelog, so the caller must rewind.
            raise BusError(f"checkpoint of {len(commit)} partitions failed: {exc}") from exc
        now = time.time()
        for tp in commit:
            self.committed_at[tp.partition] = now

    def _run(self) -> None:
        """Consume until stopped; rewind after a Kafka failure, stop the process on anything else."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                self._consume()
                return
            except (KafkaException, CauselogError) as exc:
                if not _recoverable(exc):
                    self._fail(f"{exc!r}", exc)
                    return
                self._rewind(exc)
                self._stop.wait(delay)
                delay = min(30.0, delay * 2)
            except BaseException as exc:  # a bug: say so, and let a supervisor restart us
                self._fail(f"{exc!r}", exc)
                return

    def _fail(self, reason: str, exc: BaseException) -> None:
        log.critical("ingest loop failed", exc_info=exc)
        self.failure = reason
        self.abort(f"ingest loop failed: {reason}")

    def _rewind(self, exc: BaseException) -> None:
        """Forget everything not checkpointed: the next consumer re-reads it from the last
        checkpoint (written rows are deduplicated by id, chains recomputed identically)."""
        self.rewinds += 1
        if self.problem is None:
            self.problem_since = time.time()
        self.problem = str(exc)
        log.error("ingest paused, re-reading from the last checkpoint after a backoff: %s", exc)
        if self._inflight is not None:
            future, _ = self._inflight
            self._inflight = None
            with contextlib.suppress(BaseException):
                future.result()
        with contextlib.suppress(BaseException):
            self._await_commit()
        self._written.clear()
        self._chains.clear()
        correlation = self.handler.correlation
        if correlation is not None:
            correlation.drop(list(correlation.correlators))
            if correlation.changelog is not None:
                correlation.changelog.reset()
        self.assigned.clear()

    def _consume(self) -> None:
        s = self.settings
        self._no_commit = False
        try:
            consumer = self._consumer = Consumer(consumer_config(s))
            consumer.subscribe([s.topic_changes], on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
        except KafkaException as exc:
            raise BusError(f"cannot subscribe to {s.topic_changes} on {s.kafka_bootstrap}: {exc}") from exc
        clean = False
        try:
            while not self._stop.is_set():
                self._at("consume (and rebalance callbacks)")
                self._check_committing()
                records = self._take(consumer)
                self._at("prepare (decode, correlate)")
                prepared = self.handler.prepare(records) if records else None
                self._at("waiting for the previous batch's write")
                self._settle()
                if prepared is not None:
                    self._inflight = (self._writes.submit(self.handler.finish, prepared), records)
                # Also checkpoint as soon as the input is drained, so an idle worker has no lag.
                idle = not records and (self._inflight is not None or bool(self._written) or bool(self._chains))
                if idle or time.monotonic() - self._last_checkpoint >= s.checkpoint_seconds:
                    self._at("checkpoint (changelog transaction)")
                    self._checkpoint()
                    if self.problem is not None and self.assigned:
                        log.warning("ingest resumed after %.0fs", time.time() - (self.problem_since or 0))
                        self.problem = self.problem_since = None
            self._checkpoint(final=True)
            clean = True
        finally:
            if clean:
                with contextlib.suppress(KafkaException, RuntimeError):
                    consumer.close()
            else:
                # Leave without committing anything; the group hands the partitions out again.
                self._no_commit = True
                _close_quietly(consumer)

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
        if not self._no_commit:
            self._checkpoint(revoked, final=True)
        if self.handler.correlation is not None:
            self.handler.correlation.drop(revoked)
        self.assigned -= revoked
        log.info("revoked %s", sorted(p.partition for p in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not revoked): committing is no longer possible; the new owner re-reads, the
        # store's id dedup keeps one copy. The write in hand still has to finish first.
        if self._inflight is not None and not self._no_commit:
            future, records = self._inflight
            self._inflight = None
            try:
                self._written_batch(records, future.result())
            except BaseException as exc:
                raise BatchFailed(f"batch of {len(records)} records from {records[0].position} failed: "
                                  f"{exc!r}") from exc
        lost = {p.partition for p in partitions}
        for key in [k for k in self._written if k[1] in lost]:
            del self._written[key]
        for p in lost:
            self._chains.pop(p, None)
        if self.handler.correlation is not None:
            self.handler.correlation.drop(lost)
        self.assigned -= lost
        log.warning("lost %s", sorted(p.partition for p in partitions))
        if not self._no_commit:
            # The group session expired (a broker outage longer than session.timeout.ms). Rather
            # than go on in a half-known state (the consumer keeps fetching from its position, the
            # checkpoint's group generation is gone), rewind: a fresh consumer rejoins and reads
            # from the last checkpoint, with the correlation state that belongs to it.
            raise BusError(f"partitions {sorted(lost)} of {self.settings.topic_changes} lost "
                           "(consumer group session expired)")


class BatchFailed(CauselogError):
    """A batch could not be written; nothing of it is committed."""


def _recoverable(exc: BaseException) -> bool:
    """Kafka trouble a fresh consumer can get past (a broker away, a lost group session);
    anything else is a bug that restarting in place would only repeat."""
    while isinstance(exc, BatchFailed) and exc.__cause__ is not None:
        exc = exc.__cause__
    # Even a fatal client error (a fenced producer, say) is cured by the fresh clients a rewind makes.
    return isinstance(exc, KafkaException | BusError)


def _close_quietly(consumer: Consumer) -> None:
    """Close without blocking on a broker that is away (closing leaves the group when it can)."""
    done = threading.Event()

    def close() -> None:
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()
        done.set()

    threading.Thread(target=close, name="causelog-consumer-close", daemon=True).start()
    done.wait(15)


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
