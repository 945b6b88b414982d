"""The Faust worker: consumes ``<prefix>.changes``, stores events, serves the query API.

Kept thin on purpose: decoding, DLQ routing and writing live in :mod:`pipeline.stream.ingest`.
By default records are taken by :class:`pipeline.stream.consumer.BatchConsumer` (a Faust
service) in whole batches; ``CAUSELOG_INGEST=agent`` uses a Faust agent instead, where offsets
are acknowledged by ``take_events`` only after the batch body returned. Either way a batch is
committed only once it landed in ClickHouse (and its rejections in the DLQ).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import faust
import mode
from faust.app.base import BootStrategy

from pipeline.bus import DeliveryTracker, ensure_topics, make_producer, wait_for_broker
from pipeline.bus.checkpoint import Changelog
from pipeline.integrity.sourcesig import load_source_keys
from pipeline.settings import Settings
from pipeline.store import EventWriter, Position, Store, migrate, open_store
from pipeline.stream.api import ApiContext, register_routes
from pipeline.stream.consumer import BatchConsumer, exit_now
from pipeline.stream.correlation import Correlation
from pipeline.stream.ingest import BatchHandler, Counters, Record, Rejection
from pipeline.stream.people import People
from pipeline.stream.signer import CheckpointSigner

log = logging.getLogger("causelog.worker")


def build_app(settings: Settings, store: Store) -> faust.App:
    """A Faust app wired to ``store``; run it with :func:`run_worker`."""
    app = faust.App(
        # In batch mode Faust consumes nothing; a distinct id keeps it out of the ingest group.
        settings.group if settings.ingest == "agent" else f"{settings.group}-api",
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.home / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # A killed worker is noticed after this long, then its partitions move to the others.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        broker_max_poll_records=5000,
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
        producer_acks=-1,
        topic_disable_leader=True,
        web_enabled=True,
        web_bind=settings.api_host,
        web_host=settings.api_host,
        web_port=settings.api_port,
    )
    topic = app.topic(settings.topic_changes, key_type=bytes, value_type=bytes) if settings.ingest == "agent" else None
    counters = Counters()
    producer = make_producer(settings)

    def send_dlq(rejections: Sequence[Rejection]) -> None:
        tracker = DeliveryTracker(producer)
        for r in rejections:
            key = str(r.record.position).encode()
            tracker.produce(settings.topic_dlq, r.record.value or b"", key=key, headers=r.headers())
        tracker.flush()

    correlation = Correlation(Changelog(settings))
    handler = BatchHandler(
        EventWriter(store), send_dlq, max_bytes=settings.max_event_bytes, counters=counters, correlation=correlation,
        integrity=settings.integrity,
        source_keys=load_source_keys(settings.source_keys_file) if settings.source_keys_file else None,
        people=People.load(store, settings.identities_path),
        fail_store_until=settings.fault_store_fail_until,
    )
    signer = CheckpointSigner.for_worker(settings, store) if settings.integrity else None
    consumer: BatchConsumer | None = None
    # One writer thread: batches land in the order they were taken, one at a time.
    writes = ThreadPoolExecutor(1, thread_name_prefix="causelog-write")
    reads = ThreadPoolExecutor(4, thread_name_prefix="causelog-query")

    if settings.ingest == "agent":

        @app.agent(topic)
        async def ingest(stream: faust.StreamT) -> None:
            batches = cast(faust.Stream, stream).take_events(settings.batch_size, within=settings.batch_within)
            async for events in batches:
                records = [
                    Record(ev.value, Position(ev.message.topic, ev.message.partition, ev.message.offset))
                    for ev in events
                ]
                # Faust acknowledges the batch when the loop comes back here: the correlation
                # changelog has to be durable by then, like the rows.
                await _complete(writes.submit(_handle_and_checkpoint, handler, correlation, records, signer), records)

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
            # The next owner loads the changelog; a stale copy here must not be reused.
            correlation.drop({tp.partition for tp in revoked if tp.topic == settings.topic_changes})

    else:
        batch = consumer = BatchConsumer(settings, handler, signer=signer)
        # No Faust agent consumes in this mode; without this Faust would try to join a group
        # with an empty subscription.
        app.boot_strategy = BootStrategy(app, enable_kafka_consumer=False)

        @app.service
        class Ingest(mode.Service):
            """Runs the batch consumer for as long as the worker runs."""

            async def on_start(self) -> None:
                batch.start()

            async def on_stop(self) -> None:
                await asyncio.get_running_loop().run_in_executor(None, batch.stop)

    def ingest_health() -> dict[str, Any]:
        """What is wrong with ingestion (``problems``, empty when it runs) and per partition the
        wall time its committed offset last advanced, for ``GET /health``."""
        problems = consumer.health() if consumer is not None else []
        c = counters.snapshot()
        if c["store_failing_since"]:
            problems.append(f"store writes failing for {time.time() - float(c['store_failing_since']):.0f}s, "
                            f"retrying: {c['store_error']}")
        committed = dict(consumer.committed_at) if consumer is not None else {}
        return {"problems": problems, "committed_at": committed,
                "rewinds": consumer.rewinds if consumer is not None else 0}

    register_routes(app, ApiContext(settings, store, counters, correlation, reads, signer, ingest_health))
    return app


def _handle_and_checkpoint(
    handler: BatchHandler, correlation: Correlation, records: Sequence[Record], signer: CheckpointSigner | None
) -> None:
    """Agent mode: write a batch, then snapshot the correlation state it changed (with the
    integrity logs), then sign the logs that are due: the rows are stored and the logs durable."""
    result = handler(records)
    correlation.checkpoint(result.chains)
    if signer is not None:
        signer.committed(correlation.log_heads())


async def _complete(future: Any, records: Sequence[Record]) -> None:
    """Wait for a batch; if anything stops it half-way, stop the process before acks go out."""
    try:
        await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        # Shutdown mid-batch: take_events acknowledges the batch as we leave, so it must land
        # first. The thread is still running it; wait for it synchronously.
        try:
            future.result()
        except BaseException as exc:
            _abort(records, exc)
        raise
    except BaseException as exc:
        _abort(records, exc)


def _abort(records: Sequence[Record], exc: BaseException) -> None:
    first = records[0].position if records else "-"
    exit_now(f"batch of {len(records)} records from {first} failed ({exc!r})")


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Open (and migrate) the store, make sure topics exist, run the Faust worker until stopped."""
    started = time.monotonic()
    wait_for_broker(settings, timeout=60)
    ensure_topics(settings)
    Changelog(settings).check_partitions()
    store = open_store(settings)
    migrate(store)
    app = build_app(settings, store)
    # The correlation state is millions of long-lived objects, and a batch allocates hundreds of
    # thousands of short-lived ones: with the default thresholds the collector keeps re-scanning
    # the state (measured: a third of the worker's CPU). Collect young objects less often and
    # keep everything alive at start-up out of the collector's sight.
    gc.collect()
    gc.freeze()
    # 200,000 (was 50,000): a 20,000-record batch allocates ~10 objects a record; fewer young
    # collections each re-scanning the state built since the last one took ~1.8 us an event off
    # decode + correlate + changelog (tests/bench/README.md, 2026-12-03).
    gc.set_threshold(200_000, 20, 100)
    log.info("worker ready in %.1fs (store %s)", time.monotonic() - started, store.where)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        store.close()
