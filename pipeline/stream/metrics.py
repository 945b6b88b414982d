"""``GET /metrics`` of the worker (Prometheus text format, no token: see :mod:`pipeline.stream.auth`).

Everything is read at scrape time from what the worker already keeps: the batch step's
:class:`~pipeline.stream.ingest.Counters` (totals, rejections by reason, newest event time per
source), the correlation state's sizes, the changelog's last committed transaction, the signer's
last checkpoint. Consumer lag and the age of the oldest unconsumed record are measured on a side
consumer of the worker's group (committed offsets, watermarks, one record fetched per lagging
partition), cached for a few seconds so scrapes stay cheap. Histograms (batch latency and size,
query latency by route template) are the only things observed as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import faust
from aiohttp import web
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, TopicPartition
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.metrics import CONTENT_TYPE, exposition, freshness_family, new_registry, rejected_family
from pipeline.settings import Settings
from pipeline.stream.correlation import Correlation
from pipeline.stream.ingest import Counters

if TYPE_CHECKING:
    from pipeline.stream.api import ApiContext
    from pipeline.stream.signer import CheckpointSigner

log = logging.getLogger("causelog.metrics")

BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000)
QUERY_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class LagProbe:
    """Lag and oldest unconsumed record age per partition of the changes topic, for the worker's
    group, measured on a side consumer that never joins the group nor commits. Results are
    cached ``ttl`` seconds; a failure is logged and reported as no data (never raised)."""

    def __init__(self, settings: Settings, *, ttl: float = 5.0, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.topic = settings.topic_changes
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self.wall = wall
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple[int, ...], dict[int, tuple[int, float]]] | None = None

    def measure(self, partitions: Iterable[int]) -> dict[int, tuple[int, float]]:
        """``partition -> (lag in records, age in seconds of the oldest unconsumed record)``."""
        wanted = tuple(sorted(set(partitions)))
        if not wanted:
            return {}
        with self._lock:
            now = self.clock()
            if self._cached is not None and self._cached[1] == wanted and now - self._cached[0] < self.ttl:
                return self._cached[2]
            try:
                found = self._measure(wanted)
            except KafkaException as exc:
                log.warning("cannot measure the lag of %s: %s", self.topic, exc)
                found = {}
            self._cached = (now, wanted, found)
            return found

    def close(self) -> None:
        """Close the side consumer."""
        with self._lock:
            if self._consumer is not None:
                with contextlib.suppress(KafkaException, RuntimeError):
                    self._consumer.close()
                self._consumer = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer({
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": self.settings.group,  # to read the group's committed offsets; never subscribes
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 1024 * 1024,
                "max.partition.fetch.bytes": 64 * 1024,
                "queued.max.messages.kbytes": 1024,
            })
        return self._consumer

    def _measure(self, partitions: tuple[int, ...]) -> dict[int, tuple[int, float]]:
        c = self._client()
        committed = c.committed([TopicPartition(self.topic, p) for p in partitions], timeout=self.timeout)
        out: dict[int, tuple[int, float]] = {}
        for tp in committed:
            low, high = c.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=self.timeout)
            position = tp.offset if tp.offset >= 0 else low
            lag = max(0, high - position)
            stamp = self._timestamp_at(c, tp.partition, position) if lag else None
            out[tp.partition] = (lag, max(0.0, self.wall() - stamp) if stamp is not None else 0.0)
        return out

    def _timestamp_at(self, c: Consumer, partition: int, offset: int) -> float | None:
        """Produce (or log-append) time in seconds of the first readable record at ``offset``."""
        c.assign([TopicPartition(self.topic, partition, offset)])
        try:
            for m in c.consume(1, self.timeout):
                if m.error() is None:
                    kind, ms = m.timestamp()
                    return None if kind == TIMESTAMP_NOT_AVAILABLE else ms / 1000.0
            return None
        finally:
            c.unassign()


class WorkerCollector(Collector):
    """The worker's series read at scrape time (names: deploy/grafana/README.md)."""

    def __init__(
        self,
        counters: Counters,
        correlation: Correlation,
        *,
        signer: CheckpointSigner | None = None,
        lag: LagProbe | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.correlation = correlation
        self.signer = signer
        self.lag = lag
        self.wall = wall
        self.started = wall()
        self.started_mono = signer.clock() if signer is not None else 0.0

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        with c.lock:
            totals = (c.records, c.stored, c.duplicates, c.store_retries)
            by_reason, newest = dict(c.rejected_by), dict(c.newest)
        for name, doc, value in zip(
            ("consumed", "stored", "duplicate"),
            ("records polled from the changes topic", "events written as new rows", "events already stored (same id)"),
            totals[:3], strict=True,
        ):
            yield CounterMetricFamily(f"causelog_records_{name}", doc, value=value)
        yield rejected_family(by_reason)
        yield CounterMetricFamily("causelog_store_retries", "ClickHouse inserts retried after an error",
                                  value=totals[3])
        yield freshness_family(newest, datetime.fromtimestamp(self.wall(), UTC))
        stats = self.correlation.stats()
        keys = GaugeMetricFamily("causelog_correlation_live_keys", "live link keys in the correlation state",
                                 labels=["partition"])
        chains = GaugeMetricFamily("causelog_correlation_chains", "chains held open in the correlation state",
                                   labels=["partition"])
        for s in stats:
            keys.add_metric([str(s["partition"])], float(s["live_keys"]))  # type: ignore[arg-type]
            chains.add_metric([str(s["partition"])], float(s["chains"]))  # type: ignore[arg-type]
        yield keys
        yield chains
        yield from self._lag([int(s["partition"]) for s in stats])  # type: ignore[call-overload]
        yield from self._ages()

    def _lag(self, partitions: list[int]) -> Iterator[Metric]:
        lag = GaugeMetricFamily("causelog_consumer_lag_records", "high watermark minus committed offset",
                                labels=["partition"])
        age = GaugeMetricFamily("causelog_oldest_unconsumed_age_seconds",
                                "now minus the produce time of the oldest record not yet consumed",
                                labels=["partition"])
        if self.lag is not None:
            for p, (records, seconds) in sorted(self.lag.measure(partitions).items()):
                lag.add_metric([str(p)], records)
                age.add_metric([str(p)], seconds)
        yield lag
        yield age

    def _ages(self) -> Iterator[Metric]:
        changelog = self.correlation.changelog
        if changelog is not None:
            last = changelog.committed_at
            yield GaugeMetricFamily("causelog_checkpoint_age_seconds",
                                    "since the last committed correlation changelog + offsets transaction",
                                    value=max(0.0, self.wall() - (last if last is not None else self.started)))
        if self.signer is not None:
            last_signed = max(self.signer.last.values(), default=self.started_mono)
            yield GaugeMetricFamily("causelog_signing_age_seconds", "since the last signed integrity checkpoint",
                                    value=max(0.0, self.signer.clock() - last_signed))


def worker_registry(counters: Counters, correlation: Correlation, *, signer: CheckpointSigner | None = None,
                    lag: LagProbe | None = None) -> tuple[CollectorRegistry, Histogram]:
    """The worker's registry (collector, process metrics, build info, batch histograms observed
    through ``counters.observe``) and its query latency histogram (label ``route``)."""
    registry = new_registry("worker")
    registry.register(WorkerCollector(counters, correlation, signer=signer, lag=lag))
    seconds = Histogram("causelog_batch_seconds", "from a batch taken in hand to its rows stored",
                        buckets=BATCH_SECONDS_BUCKETS, registry=registry)
    size = Histogram("causelog_batch_size_records", "records per ClickHouse insert batch",
                     buckets=BATCH_SIZE_BUCKETS, registry=registry)

    def observe(records: int, elapsed: float) -> None:
        size.observe(records)
        seconds.observe(elapsed)

    counters.observe = observe
    query = Histogram("causelog_query_seconds", "query API latency by route template", ["route"],
                      buckets=QUERY_SECONDS_BUCKETS, registry=registry)
    return registry, query


def route_of(request: web.Request) -> str:
    """The route template a request matched (``/v1/chain/{event_id}``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def timing_middleware(query: Histogram) -> Any:
    """An aiohttp middleware observing every request's latency under its route template."""

    @web.middleware
    async def timed(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            query.labels(route=route_of(request)).observe(time.perf_counter() - started)

    return timed


def register_metrics(app: faust.App, ctx: ApiContext) -> None:
    """``GET /metrics`` on the worker's API port, and the query latency middleware."""
    lag = LagProbe(ctx.settings)
    registry, query = worker_registry(ctx.counters, ctx.correlation, signer=ctx.signer, lag=lag)
    # Outermost: the latency a client sees, the token check and the audit included.
    app.web.web_app.middlewares.insert(0, timing_middleware(query))  # type: ignore[attr-defined]

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # Off the event loop: the lag probe may wait on Kafka (a few seconds at most).
            body = await asyncio.get_running_loop().run_in_executor(None, exposition, registry)
            return self.bytes(body, headers={"Content-Type": CONTENT_TYPE})
