"""Prometheus metrics shared by every causelog process (names: deploy/grafana/README.md).

Values are read at scrape time from what the processes already keep (custom collectors), so the
hot paths carry no instrumentation beyond a counter increment. Labels never hold anything
sensitive or unbounded: no event ids, actors, targets, tokens or SQL; sources and receivers are
few and named by configuration. This module imports no Kafka, Faust or ClickHouse client: the
receivers and sources use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.errors import ConfigError

#: ``Content-Type`` of the text exposition format ``generate_latest`` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ROLES = ("worker", "receiver", "rules", "source")


def causelog_version() -> str:
    """The installed distribution's version (``unknown`` when running from a bare checkout)."""
    try:
        return version("causelog")
    except PackageNotFoundError:
        return "unknown"


class BuildInfo(Collector):
    """``causelog_build_info{version, role} 1``: one series per process."""

    def __init__(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown metrics role {role!r}: one of {', '.join(ROLES)}")
        self.role = role
        self.version = causelog_version()

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("causelog_build_info", "causelog version and role of this process (always 1)",
                              labels=["version", "role"])
        g.add_metric([self.version, self.role], 1)
        yield g


def new_registry(role: str) -> CollectorRegistry:
    """A registry holding the process collector (``process_resident_memory_bytes``) and build info."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    registry.register(BuildInfo(role))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)


def rejected_family(by_reason: Mapping[str, int]) -> CounterMetricFamily:
    """``causelog_records_rejected_total{reason}`` from reason -> count."""
    c = CounterMetricFamily("causelog_records_rejected", "records sent to the DLQ, by reason", labels=["reason"])
    for reason, n in sorted(by_reason.items()):
        c.add_metric([reason], n)
    return c


def freshness_family(newest: Mapping[str, datetime], now: datetime) -> GaugeMetricFamily:
    """``causelog_source_freshness_seconds{source}``: now minus the newest event time per source."""
    g = GaugeMetricFamily("causelog_source_freshness_seconds", "now minus the newest event time seen from a source",
                          labels=["source"])
    for source, t in sorted(newest.items()):
        g.add_metric([source], max(0.0, (now - t).total_seconds()))
    return g


def note_newest(newest: dict[str, datetime], events: Iterable[Any]) -> None:
    """Keep the newest ``time`` per ``source`` of ``events`` in ``newest`` (caller holds its lock)."""
    for e in events:
        t = newest.get(e.source)
        if t is None or e.time > t:
            newest[e.source] = e.time


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9101`` for IPv6) of a ``--metrics`` option."""
    host, sep, port = address.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--metrics {address!r} must look like HOST:PORT (e.g. 127.0.0.1:9101)")
    return host, int(port)


def serve_metrics(registry: CollectorRegistry, address: str) -> tuple[str, int]:
    """Serve ``registry`` on ``http://HOST:PORT/metrics`` from a daemon thread; the bound address."""
    host, port = parse_address(address)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {address}: {exc}") from None
    bound = server.server_address
    return str(bound[0]), int(bound[1])


# -- HTTP receivers (pipeline.sources.receiver) -----------------------------------------------------

RECEIVER_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Latency:
    """``causelog_receiver_request_seconds{receiver}``: request to answer, per receiver."""

    def __init__(self, receiver: str) -> None:
        self._histogram = Histogram("causelog_receiver_request_seconds", "from a request read to its answer sent",
                                    ["receiver"], buckets=RECEIVER_SECONDS_BUCKETS, registry=None)
        self._child = self._histogram.labels(receiver)

    def observe(self, seconds: float) -> None:
        """Count one answer that took ``seconds``."""
        self._child.observe(seconds)

    def collect(self) -> Iterable[Metric]:
        """The histogram's families."""
        return self._histogram.collect()


class ReceiverCollector(Collector):
    """Requests by status, events produced, DLQ records by reason and latency of one receiver
    (a :class:`~pipeline.sources.receiver.Receiver`, read at scrape time)."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver

    def collect(self) -> Iterator[Metric]:
        r = self.receiver
        name = r.kind.name
        codes, reasons, events = r.counts()
        req = CounterMetricFamily("causelog_receiver_requests", "HTTP deliveries by status",
                                  labels=["receiver", "code"])
        for code, n in sorted(codes.items()):
            req.add_metric([name, str(code)], n)
        yield req
        ev = CounterMetricFamily("causelog_receiver_events", "events produced to the changes topic",
                                 labels=["receiver"])
        ev.add_metric([name], events)
        yield ev
        yield rejected_family(reasons)
        yield from r.latency.collect()


def receiver_registry(receiver: Any) -> CollectorRegistry:
    """The registry a receiver serves on its ``GET /metrics``."""
    registry = new_registry("receiver")
    registry.register(ReceiverCollector(receiver))
    return registry


# -- long-running sources (``causelog ingest --metrics HOST:PORT <kind> --follow``) ---------------


class SourceMetrics(Collector):
    """What a source connector sent: events, rejections by reason, cursor commits, freshness.

    :meth:`watch` wraps a convert function to see every event's source and time; :meth:`add`
    takes each finished round's report. Thread-safe.
    """

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.events = 0
        self.commits = 0
        self.rejected: dict[str, int] = {}
        self.newest: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def watch(self, convert: Callable[[Any], list[Any]]) -> Callable[[Any], list[Any]]:
        """``convert``, noting the newest event time per source of what it returns."""

        def watched(rec: Any) -> list[Any]:
            out = convert(rec)
            with self._lock:
                note_newest(self.newest, out)
            return out

        return watched

    def add(self, report: Any) -> None:
        """Count a round's :class:`~pipeline.sources.runner.Report` (events, rejections, commits)."""
        with self._lock:
            self.events += report.events
            self.commits += report.commits
            for reason, n in report.reasons.items():
                self.rejected[reason] = self.rejected.get(reason, 0) + n

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            events, commits, rejected, newest = self.events, self.commits, dict(self.rejected), dict(self.newest)
        yield CounterMetricFamily("causelog_source_events", "events sent to the changes topic", value=events)
        yield CounterMetricFamily("causelog_source_cursor_commits", "transactions committing events and the cursor",
                                  value=commits)
        yield rejected_family(rejected)
        yield freshness_family(newest, self.clock())


# -- the rules runner ------------------------------------------------------------------------------


class RulesMetrics(Collector):
    """Rules evaluated, alerts by level, alerts stored by outcome, notifications by notifier and
    outcome, notifications in flight. Thread-safe.

    ``evaluated`` is read at scrape time (records of the running report × rules loaded), and so is
    ``in_flight`` (per notifier: alerts read by the alert sink and not finished; set it once the
    sink runs)."""

    def __init__(self, evaluated: Callable[[], int]) -> None:
        self.evaluated = evaluated
        self.in_flight: Callable[[], Mapping[str, int]] = dict
        self.alerts: dict[str, int] = {}
        self.stores: dict[str, int] = {}
        self.notifications: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def stored(self, n: int, outcome: str = "stored") -> None:
        """Count alerts the alert sink wrote to the alerts table (``stored``) or could not (``failed``:
        one per alert and failed attempt; they are retried)."""
        with self._lock:
            self.stores[outcome] = self.stores.get(outcome, 0) + n

    def alerted(self, alerts: Iterable[Any]) -> None:
        """Count committed alerts by level."""
        with self._lock:
            for a in alerts:
                self.alerts[a.level] = self.alerts.get(a.level, 0) + 1

    def delivered(self, delivery: Any) -> None:
        """Count a :class:`~pipeline.stream.notifier.Delivery`: ``sent`` or ``failed``, plus one
        ``retried`` per attempt after the first."""
        outcome = "sent" if delivery.status == "delivered" else "failed"
        with self._lock:
            for key, n in (((delivery.receiver, outcome), 1), ((delivery.receiver, "retried"),
                                                                max(0, delivery.attempts - 1))):
                if n:
                    self.notifications[key] = self.notifications.get(key, 0) + n

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            alerts, notes, stores = dict(self.alerts), dict(self.notifications), dict(self.stores)
        yield CounterMetricFamily("causelog_rules_evaluated", "rule evaluations (rule x chain record)",
                                  value=self.evaluated())
        a = CounterMetricFamily("causelog_alerts", "alerts raised, by level", labels=["level"])
        for level, n in sorted(alerts.items()):
            a.add_metric([level], n)
        yield a
        st = CounterMetricFamily("causelog_alerts_stored", "alerts written to the alerts table by the alert sink, "
                                 "by outcome (failed: retried)", labels=["outcome"])
        for outcome in ("stored", "failed"):
            st.add_metric([outcome], stores.get(outcome, 0))
        yield st
        g = GaugeMetricFamily("causelog_notifications_in_flight", "alerts read by the alert sink and not yet "
                              "delivered or failed, by notifier", labels=["notifier"])
        for notifier, n in sorted(self.in_flight().items()):
            g.add_metric([notifier], n)
        yield g
        n_ = CounterMetricFamily("causelog_notifications", "alert notifications by notifier and outcome",
                                 labels=["notifier", "outcome"])
        for (notifier, outcome), n in sorted(notes.items()):
            n_.add_metric([notifier, outcome], n)
        yield n_

