"""Prometheus metrics (pipeline/metrics.py, pipeline/stream/metrics.py): the values come from the
real objects the processes keep (a real batch step on the test store, a real correlation state,
a real signer), parsed back with prometheus_client's own text parser."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from factories import event_bytes, malformed_records
from prometheus_client.parser import text_string_to_metric_families

from pipeline.bus.checkpoint import Changelog
from pipeline.errors import ConfigError
from pipeline.integrity.note import Signer
from pipeline.metrics import RulesMetrics, SourceMetrics, exposition, new_registry, parse_address
from pipeline.model import decode
from pipeline.settings import load
from pipeline.sources.runner import Report
from pipeline.store import EventWriter, Position, Store
from pipeline.stream.correlation import Correlation
from pipeline.stream.ingest import BatchHandler, Counters, Record, Rejection
from pipeline.stream.metrics import timing_middleware, worker_registry
from pipeline.stream.notifier import Delivery
from pipeline.stream.signer import CheckpointSigner

ROOT = Path(__file__).resolve().parents[2]
MAX = 4096


def scrape(registry: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``(sample name, sorted labels) -> value`` of a registry's text exposition."""
    text = exposition(registry).decode()  # type: ignore[arg-type]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def names(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {re.sub(r"_(bucket|sum|count|created)$", "", n) for n, _ in samples}


def documented(role: str) -> set[str]:
    """Metric names deploy/grafana/README.md says ``role`` emits."""
    rows = re.findall(r"^\| `(causelog_[a-z_]+)` \|.*\| ([a-z ,()]+) \|$",
                      (ROOT / "deploy" / "grafana" / "README.md").read_text(), flags=re.M)
    return {name for name, by in rows if role in by or by.strip() == "all"}


class DLQ:
    def __init__(self) -> None:
        self.sent: list[Rejection] = []

    def __call__(self, rejections: Sequence[Rejection]) -> None:
        self.sent.extend(rejections)


@pytest.fixture
def worker(store: Store):  # type: ignore[no-untyped-def]
    counters = Counters()
    correlation = Correlation(None)
    dlq = DLQ()
    handler = BatchHandler(EventWriter(store), dlq, max_bytes=MAX, counters=counters, correlation=correlation)
    registry, query = worker_registry(counters, correlation)
    return handler, counters, correlation, dlq, registry


def batch(start: int, n: int, bad: int = 0) -> list[Record]:
    recs = [Record(event_bytes(i), Position("causelog.changes", i % 2, i)) for i in range(start, start + n)]
    for k, (_, value) in enumerate(malformed_records(bad, MAX)):
        recs.append(Record(value, Position("causelog.changes", 0, start + n + k)))
    return recs


def test_worker_totals_are_the_batch_steps(worker, store: Store) -> None:  # type: ignore[no-untyped-def]
    handler, counters, correlation, dlq, registry = worker
    handler(batch(0, 40, bad=10))
    handler(batch(30, 20))  # 10 of these are already stored
    s = scrape(registry)
    stored = int(store.query(f"SELECT count() FROM {store.database}.events").rows[0][0])
    assert value(s, "causelog_records_stored_total") == counters.stored == stored == 50
    assert value(s, "causelog_records_consumed_total") == counters.records == 70
    assert value(s, "causelog_records_duplicate_total") == counters.duplicates == 10
    reasons: dict[str, int] = {}
    for r in dlq.sent:
        reasons[r.error.reason] = reasons.get(r.error.reason, 0) + 1
    assert reasons == {"bad_json": 2, "missing_field": 2, "wrong_type": 2, "invalid_value": 2, "oversized": 2}
    for reason, n in reasons.items():
        assert value(s, "causelog_records_rejected_total", reason=reason) == n
    assert value(s, "causelog_batch_size_records_count") == 2
    assert value(s, "causelog_batch_size_records_sum") == 70
    assert value(s, "causelog_batch_seconds_count") == 2
    assert value(s, "causelog_store_retries_total") == 0
    stats = {st["partition"]: st for st in correlation.stats()}
    assert set(stats) == {0, 1}
    for p, st in stats.items():
        assert value(s, "causelog_correlation_live_keys", partition=str(p)) == st["live_keys"] > 0
        assert value(s, "causelog_correlation_chains", partition=str(p)) == st["chains"] > 0
    assert value(s, "causelog_build_info", role="worker", version=next(
        dict(k[1])["version"] for k in s if k[0] == "causelog_build_info")) == 1


def test_worker_freshness_is_now_minus_newest_event_time(worker) -> None:  # type: ignore[no-untyped-def]
    handler, counters, *_, registry = worker
    handler(batch(0, 5))
    newest = counters.newest["causelog://test"]
    before = datetime.now(UTC)
    age = value(scrape(registry), "causelog_source_freshness_seconds", source="causelog://test")
    after = datetime.now(UTC)
    assert (before - newest).total_seconds() - 1e-3 <= age <= (after - newest).total_seconds() + 1e-3
    assert newest == decode(event_bytes(4)).time  # the newest of events 0..4


def test_every_documented_worker_metric_is_served(worker) -> None:  # type: ignore[no-untyped-def]
    handler, counters, correlation, _, registry = worker
    handler(batch(0, 5, bad=1))
    correlation.changelog = Changelog(load({}))
    signer = CheckpointSigner(load({}), None, Signer.generate("causelog/d"), "d")  # type: ignore[arg-type]
    registry, query = worker_registry(counters, correlation, signer=signer)
    query.labels(route="/v1/why").observe(0.01)
    s = scrape(registry)
    # Lag needs the broker: tests/integration/test_metrics.py checks those two on a running worker.
    missing = documented("worker") - names(s)
    assert missing == {"causelog_consumer_lag_records", "causelog_oldest_unconsumed_age_seconds"}
    assert ("process_resident_memory_bytes", ()) in s


def test_checkpoint_and_signing_ages(worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, counters, correlation, _, _ = worker
    now = [1000.0]
    settings = load({"CAUSELOG_HOME": str(tmp_path)})
    signer = CheckpointSigner(settings, None, Signer.generate("causelog/d"), "d",  # type: ignore[arg-type]
                              clock=lambda: now[0])
    signer._publish = lambda notes: None  # type: ignore[method-assign]  # no Kafka, no store here
    correlation.changelog = Changelog(settings)
    registry, _ = worker_registry(counters, correlation, signer=signer)
    now[0] += 30
    s = scrape(registry)
    assert value(s, "causelog_signing_age_seconds") == 30  # never signed: since the worker started
    from pipeline.integrity.merkle import leaf_hash

    assert signer.committed({0: (3, leaf_hash(b"x"))})
    now[0] += 7
    assert value(scrape(registry), "causelog_signing_age_seconds") == 7
    correlation.changelog.committed_at = datetime.now(UTC).timestamp() - 12
    assert 12 <= value(scrape(registry), "causelog_checkpoint_age_seconds") < 14


def test_query_latency_is_labelled_by_route_template() -> None:
    registry = new_registry("worker")
    from prometheus_client import Histogram

    query = Histogram("causelog_query_seconds", "q", ["route"], registry=registry)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def go() -> None:
        app = web.Application(middlewares=[timing_middleware(query)])
        app.router.add_get("/v1/chain/{event_id}", ok)
        async with TestClient(TestServer(app)) as client:
            for path in ("/v1/chain/abc", "/v1/chain/secret-id", "/nope"):
                await client.get(path)

    asyncio.run(go())
    s = scrape(registry)
    assert value(s, "causelog_query_seconds_count", route="/v1/chain/{event_id}") == 2
    assert value(s, "causelog_query_seconds_count", route="unmatched") == 1
    assert not any("abc" in str(labels) or "secret" in str(labels) for _, labels in s)


def test_rules_metrics() -> None:
    records = [0]
    m = RulesMetrics(lambda: records[0] * 3)
    registry = new_registry("rules")
    registry.register(m)

    class A:
        def __init__(self, level: str) -> None:
            self.level = level

    m.alerted([A("high"), A("high"), A("low")])
    m.delivered(Delivery(alert_id="a", receiver="pager", status="delivered", attempts=1))
    m.delivered(Delivery(alert_id="b", receiver="pager", status="failed", attempts=3, error="down"))
    records[0] = 5
    s = scrape(registry)
    assert value(s, "causelog_rules_evaluated_total") == 15
    assert value(s, "causelog_alerts_total", level="high") == 2
    assert value(s, "causelog_alerts_total", level="low") == 1
    assert value(s, "causelog_notifications_total", notifier="pager", outcome="sent") == 1
    assert value(s, "causelog_notifications_total", notifier="pager", outcome="failed") == 1
    assert value(s, "causelog_notifications_total", notifier="pager", outcome="retried") == 2
    assert value(s, "causelog_alerts_stored_total", outcome="stored") == 0
    m.stored(4)
    m.stored(2, "failed")
    m.in_flight = lambda: {"pager": 3}
    s = scrape(registry)
    assert value(s, "causelog_alerts_stored_total", outcome="stored") == 4
    assert value(s, "causelog_alerts_stored_total", outcome="failed") == 2
    assert value(s, "causelog_notifications_in_flight", notifier="pager") == 3
    assert documented("rules") <= names(s)


def test_source_metrics() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    m = SourceMetrics(lambda: now)
    registry = new_registry("source")
    registry.register(m)

    class E:
        def __init__(self, source: str, minutes: int) -> None:
            self.source, self.time = source, now - timedelta(minutes=minutes)

    convert = m.watch(lambda rec: [E("causelog://okta", rec), E("causelog://okta", rec + 5)])
    convert(3)
    convert(1)
    m.add(Report(records=4, events=4, rejected=2, commits=1, reasons={"bad_json": 2}))
    s = scrape(registry)
    assert value(s, "causelog_source_freshness_seconds", source="causelog://okta") == 60
    assert value(s, "causelog_source_events_total") == 4
    assert value(s, "causelog_source_cursor_commits_total") == 1
    assert value(s, "causelog_records_rejected_total", reason="bad_json") == 2


def test_metrics_address_is_checked() -> None:
    assert parse_address("[::1]:9101") == ("::1", 9101)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address("9101")
