"""``GET /metrics`` of a running worker on the shared broker: no token, the text format parsed by
prometheus_client, totals equal to what was stored, every worker series of the dashboards there."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from factories import event_bytes, event_dict, malformed_records
from kafka_stack import Stack
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=30) as resp:  # no Authorization header
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def dashboard_metrics() -> set[str]:
    """Every ``causelog_*`` metric the Prometheus panels query."""
    text = (ROOT / "deploy" / "grafana" / "dashboards" / "pipeline-health.json").read_text()
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\bcauselog_[a-z_]+", text)}


def emitted_by(role: str) -> set[str]:
    rows = re.findall(r"^\| `(causelog_[a-z_]+)` \|.*\| ([a-z ,()]+) \|$",
                      (ROOT / "deploy" / "grafana" / "README.md").read_text(), flags=re.M)
    return {name for name, by in rows if role in by or by.strip() == "all"}


def names(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {re.sub(r"_(bucket|sum|count|created)$", "", n) for n, _ in samples}


def test_worker_metrics_without_a_token(stack: Stack) -> None:
    bad = malformed_records(10, stack.settings.max_event_bytes)
    stack.produce([event_bytes(i) for i in range(500)] + [v for _, v in bad], key=b"")
    stack.start_worker()
    counters = stack.wait_records(510)
    stored = stack.sql("SELECT count() FROM DB.events")[0][0]
    url = f"http://{stack.settings.api_host}:{stack.settings.api_port}/metrics"
    # Lag is measured on committed offsets (cached 5 s): wait for the idle checkpoint.
    deadline = time.monotonic() + 60
    while True:
        s = scrape(url)
        lags = {dict(k[1])["partition"]: v for k, v in s.items() if k[0] == "causelog_consumer_lag_records"}
        if (lags and not any(lags.values())) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(lags) == 4 and set(lags.values()) == {0}, lags
    assert s[("causelog_records_stored_total", ())] == stored == counters["stored"] == 500
    assert s[("causelog_records_consumed_total", ())] == 510
    rejected = {dict(k[1])["reason"]: v for k, v in s.items() if k[0] == "causelog_records_rejected_total"}
    assert rejected == {"bad_json": 2, "missing_field": 2, "wrong_type": 2, "invalid_value": 2, "oversized": 2}
    assert s[("causelog_source_freshness_seconds", (("source", "causelog://test"),))] > 0
    ages = [v for k, v in s.items() if k[0] == "causelog_oldest_unconsumed_age_seconds"]
    assert len(ages) == 4 and set(ages) == {0}
    # A query is timed under its route template; the raw path never becomes a label.
    stack.stats()
    s = scrape(url)
    stack.cli("chain", "no-such-event-id")
    s = scrape(url)
    routes = {dict(k[1])["route"]: v for k, v in s.items() if k[0] == "causelog_query_seconds_count"}
    assert routes.get("/v1/stats", 0) >= 1, routes
    assert routes.get("/v1/chain/{event_id}", 0) >= 1, routes
    assert not any("no-such-event-id" in r for r in routes), routes
    # Nothing of the events (ids, actors, targets) nor of the queries appears anywhere in the text.
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    for secret in ("no-such-event-id", "@acme.io", "svc-", event_dict(0)["id"], "Bearer"):
        assert secret not in text, secret
    worker = dashboard_metrics() & emitted_by("worker")
    assert worker - names(s) == set()
    assert ("causelog_build_info", (("role", "worker"), ("version", next(
        dict(k[1])["version"] for k in s if k[0] == "causelog_build_info")))) in s


def test_rules_runner_metrics(stack: Stack, tmp_path: Path) -> None:
    from confluent_kafka import Producer
    from kafka_stack import free_port

    from pipeline.rules.engine import Item, encode_item, fmt_us

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yml").write_text(
        "title: failed login\nid: 11111111-1111-4111-8111-111111111111\nlogsource: {product: causelog}\n"
        "detection:\n    selection: {type: iam.login, outcome: failure}\n    condition: selection\nlevel: low\n")
    stack.ensure_topics()
    p = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap, "acks": "all"})
    for i in range(20):
        env = {"id": f"e{i:03d}", "time": fmt_us(1_764_200_000_000_000 + i * 60_000_000), "type": "iam.login",
               "outcome": "failure" if i % 2 else "success", "source": "okta://acme", "scope": "acme",
               "action": "x", "actor": {"id": "u", "assurance": "authenticated"}, "target": {"id": "t"}, "links": []}
        p.produce(stack.settings.topic_chains, encode_item(Item(event=env, chain_id=f"c{i}", person="u")), key=b"k")
    assert p.flush(60) == 0
    # A webhook that takes every notification (2xx), so notifications are counted too.
    import http.server
    import threading

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    (tmp_path / "notify.yaml").write_text(
        f"receivers:\n  - name: ops\n    type: webhook\n    url: http://127.0.0.1:{hook.server_address[1]}/\n")
    port = free_port()
    env = dict(stack.env, CAUSELOG_RULES=str(tmp_path / "rules"), CAUSELOG_NOTIFY=str(tmp_path / "notify.yaml"))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "rules", "run", "--metrics",
                             f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        s: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline:
            try:
                s = scrape(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                s = {}
            if s.get(("causelog_notifications_total", (("notifier", "ops"), ("outcome", "sent"))), 0) >= 10:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        hook.shutdown()
    assert s[("causelog_alerts_total", (("level", "low"),))] == 10
    assert s[("causelog_notifications_total", (("notifier", "ops"), ("outcome", "sent")))] == 10
    assert emitted_by("rules") - names(s) == set()
    from pipeline.rules.loader import load

    rules = len(load([tmp_path / "rules"]))  # the built-in pack and this rule, as the runner loads them
    assert s[("causelog_rules_evaluated_total", ())] == 20 * rules
    assert ("causelog_build_info", (("role", "rules"), ("version", next(
        dict(k[1])["version"] for k in s if k[0] == "causelog_build_info")))) in s


def test_following_source_serves_metrics(stack: Stack, tmp_path: Path) -> None:
    import orjson
    from kafka_stack import free_port

    template = ROOT.parent / "shared" / "data" / "config" / "falco-k8s-audit" / "create_configmap.json"
    if not template.exists():
        pytest.skip(f"real sample data not found at {template}")
    base = orjson.loads(template.read_bytes())
    log = tmp_path / "audit.log"
    with log.open("wb") as fh:
        for i in range(30):
            ev = dict(base, auditID=f"00000000-0000-0000-0000-{i:012d}")
            ev["objectRef"] = dict(base["objectRef"], name=f"cfg-{i}")
            fh.write(orjson.dumps(ev) + b"\n")
        fh.write(b'{"kind": "Event", "auditID": \n')
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "ingest", "--metrics", f"127.0.0.1:{port}",
                             "k8s-audit", "--file", str(log), "--follow"], env=stack.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        s: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline:
            try:
                s = scrape(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                s = {}
            if s.get(("causelog_source_events_total", ()), 0) >= 30:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert s[("causelog_source_events_total", ())] == 30
    assert s[("causelog_records_rejected_total", (("reason", "bad_json"),))] == 1
    assert s[("causelog_source_cursor_commits_total", ())] >= 1
    fresh = {dict(k[1])["source"]: v for k, v in s.items() if k[0] == "causelog_source_freshness_seconds"}
    assert list(fresh) == ["k8s-audit"] and fresh["k8s-audit"] > 0, fresh  # the envelope's source
    assert emitted_by("source") - names(s) == set()


def test_receiver_metrics_on_its_listen_port(stack: Stack) -> None:
    import http.client

    import orjson
    from kafka_stack import free_port

    template = ROOT.parent / "shared" / "data" / "config" / "falco-k8s-audit" / "create_configmap.json"
    if not template.exists():
        pytest.skip(f"real sample data not found at {template}")
    items = [orjson.loads(template.read_bytes())]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "ingest", "k8s-audit", "--listen",
                             f"127.0.0.1:{port}", "--cluster", "it"], env=stack.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def post(body: bytes) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.2)
        batch = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
        assert post(batch) == 200
        assert post(batch) == 200
        assert post(b"{not an event list") == 400
        s = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    produced = stack.read_topic(stack.settings.topic_changes, expected=2 * len(items), timeout=30)

    def requests(code: str) -> float:
        return s[("causelog_receiver_requests_total", (("code", code), ("receiver", "k8s-audit")))]

    assert (requests("200"), requests("400")) == (2, 1)
    assert s[("causelog_receiver_events_total", (("receiver", "k8s-audit"),))] == len(produced) == 2
    assert s[("causelog_records_rejected_total", (("reason", "bad_json"),))] == 1
    assert s[("causelog_receiver_request_seconds_count", (("receiver", "k8s-audit"),))] == 3
    assert (emitted_by("receiver") & dashboard_metrics()) - names(s) == set()


def test_lag_probe_measures_committed_offsets_and_produce_times(stack: Stack) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from pipeline.stream.metrics import LagProbe

    stack.ensure_topics()
    before = time.time()
    stack.produce([event_bytes(i) for i in range(40)], key=b"")  # keys 0..39: every partition
    after = time.time()
    topic = stack.settings.topic_changes
    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": stack.settings.group,
                  "enable.auto.commit": False})
    try:
        highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(4)}
        assert highs[0] > 2
        c.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    finally:
        c.close()
    probe = LagProbe(stack.settings)
    try:
        time.sleep(1.0)
        start = time.time()
        measured = probe.measure([0, 1, 2, 3])
        now = time.time()
    finally:
        probe.close()
    assert {p: lag for p, (lag, _) in measured.items()} == {0: highs[0] - 2, 1: highs[1], 2: highs[2], 3: highs[3]}
    for p, (lag, age) in measured.items():
        if lag:  # produced between before and after, measured between start and now
            assert start - after - 0.01 <= age <= now - before + 0.01, (p, age)
