"""The alert sink on a real broker and a real worker (the alerts tables are its embedded store):
alerts of ``<prefix>.alerts`` end up in the table once and at every receiver; a ``rules run``
killed with SIGKILL before its receiver got the alerts delivers them after its restart; a dead
receiver delays neither the table nor the other receivers, and its failures are recorded."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from confluent_kafka import Producer
from kafka_stack import Stack, header

from pipeline.cli.rules import _Tables
from pipeline.rules.engine import Item, encode_item, fmt_us
from pipeline.rules.model import Alert
from pipeline.rules.notify import NotifyConfig, Receiver
from pipeline.stream.alert_sink import AlertSink, notify_group, sink_lag, store_group
from pipeline.stream.notifier import Delivery

pytestmark = pytest.mark.integration


class HttpReceiver:
    """A local HTTP receiver: answers 500 while ``failing`` is set, else 202 (and keeps the body)."""

    def __init__(self, failing: bool = False, fail_first: int = 0) -> None:
        self.bodies: list[Any] = []
        self.requests = 0
        self.failing = threading.Event()
        if failing:
            self.failing.set()
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                if outer.failing.is_set() or outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(500)
                else:
                    outer.bodies.append(body)
                    self.send_response(202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self, key: str = "id") -> list[str]:
        return [b[key] for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_receivers() -> Iterator[Callable[..., HttpReceiver]]:
    made: list[HttpReceiver] = []

    def make(**kw: Any) -> HttpReceiver:
        made.append(HttpReceiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def _alert(tag: str, i: int) -> Alert:
    return Alert(id=f"{tag}{i:04d}", rule_id="11111111-1111-4111-8111-111111111111", title="failed login",
                 level="high", kind="detection", time=fmt_us(1_764_200_000_000_000 + i * 1_000_000),
                 event_ids=(f"e{i}",), chain_id=f"c{i}", summary=f"failed login {i}")


def _produce_alerts(stack: Stack, values: list[tuple[bytes, bytes]]) -> None:
    p = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value in values:
        p.produce(stack.settings.topic_alerts, value, key=key)
    assert p.flush(30) == 0


def _table(stack: Stack, ids: list[str]) -> dict[str, int]:
    """Rows per alert id in the alerts table (after replacing merges: FINAL)."""
    quoted = ",".join(f"'{i}'" for i in ids)
    return dict(stack.sql(f"SELECT id, count() FROM DB.alerts FINAL WHERE id IN ({quoted}) GROUP BY id"))


def _deliveries(stack: Stack, ids: list[str]) -> list[list[Any]]:
    quoted = ",".join(f"'{i}'" for i in ids)
    return stack.sql(f"SELECT alert_id, receiver, status, attempts, error FROM DB.alert_deliveries "
                     f"WHERE alert_id IN ({quoted}) ORDER BY alert_id, receiver")


def _sink(stack: Stack, cfg: NotifyConfig, said: list[str], outcomes: list[Delivery], **kw: Any) -> AlertSink:
    tables = _Tables(stack.settings)
    return AlertSink(stack.settings, cfg, store_alerts=tables.alerts, store_deliveries=tables.deliveries,
                     say=said.append, on_delivery=outcomes.append, within=0.2, **kw)


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_alerts_are_stored_once_and_delivered_to_every_receiver(stack: Stack, http_receivers) -> None:  # type: ignore[no-untyped-def]
    stack.start_worker()
    ok, flaky = http_receivers(), http_receivers(fail_first=3)
    cfg = NotifyConfig(receivers=(Receiver("ok", "webhook", ok.url),
                                  Receiver("pd", "pagerduty", flaky.url, routing_key="k")), attempts=4, backoff=0.05)
    said: list[str] = []
    outcomes: list[Delivery] = []
    stored: tuple[list[Alert], list[Alert]] = ([], [])
    # Two sinks (two `rules run` processes) share the partitions of <prefix>.alerts (created with one;
    # a deployment may add more).
    from confluent_kafka.admin import AdminClient, NewPartitions

    admin = AdminClient({"bootstrap.servers": stack.settings.kafka_bootstrap})
    admin.create_partitions([NewPartitions(stack.settings.topic_alerts, 4)])[stack.settings.topic_alerts].result(30)
    sinks = [_sink(stack, cfg, said, outcomes, on_stored=stored[i].extend) for i in range(2)]
    try:
        for sink in sinks:
            sink.start()

        def shared() -> bool:
            owned = [s.owned() for s in sinks]
            return all(len(o[k]) == 2 and not o[k] & other[k] for o, other in (owned, owned[::-1])
                       for k in ("store", "notify:ok", "notify:pd"))
        _wait(shared, 30, "both sinks to own two of the four partitions of each group")
        alerts = [_alert("one", i) for i in range(25)]
        records = [(a.id.encode(), msgspec.json.encode(a)) for a in alerts]
        # A replay of five alerts, and a record that is no alert.
        _produce_alerts(stack, records[:10] + records[:5] + [(b"bad", b"{not an alert")] + records[10:])
        assert sinks[0].drain(60) == {}
    finally:
        for sink in sinks:
            sink.close()
    assert stored[0] and stored[1]  # each stored its share
    ids = [a.id for a in alerts]
    assert sorted({a.id for a in stored[0] + stored[1]}) == sorted(ids)
    assert _table(stack, ids) == dict.fromkeys(ids, 1)
    listed = stack.cli("alerts", "--json", "--limit", "1000", check=True).stdout
    assert sorted(a["id"] for a in orjson.loads(listed)) == sorted(ids)
    assert sorted(set(ok.ids())) == sorted(ids) and len(ok.ids()) == 30  # the replayed five twice
    assert sorted(set(flaky.ids("dedup_key"))) == sorted(ids)  # PagerDuty dedups the replays on dedup_key
    rows = _deliveries(stack, ids)
    assert {(r[0], r[1]) for r in rows} == {(i, n) for i in ids for n in ("ok", "pd")}
    assert all(r[2] == "delivered" for r in rows)
    # Three 500s, retried (by whichever delivery thread got them), none failed.
    assert sum(d.attempts - 1 for d in outcomes if d.receiver == "pd") == 3
    assert len(outcomes) == 60 and all(d.status == "delivered" for d in outcomes)
    (dlq,) = stack.read_topic(stack.settings.topic_dlq, 1)
    assert dlq.value() == b"{not an alert" and header(dlq, "reason") == "invalid_value"
    assert (header(dlq, "origin") or "").startswith(f"{stack.settings.topic_alerts}[")
    assert (dlq.key() or b"").startswith(b"alert-sink:")
    assert any("not an alert" in line for line in said)
    assert sink_lag(stack.settings, cfg) == {"store": 0, "notify:ok": 0, "notify:pd": 0}
    assert any(line.startswith("receiver pd failing: HTTP 500 ") for line in said), said
    assert "receiver pd takes notifications again" in said
    assert [line for line in said if "not an alert" not in line and "receiver pd " not in line] == []


def test_a_dead_receiver_delays_neither_the_table_nor_the_other_receivers(stack: Stack, http_receivers) -> None:  # type: ignore[no-untyped-def]
    stack.start_worker()
    ok = http_receivers()
    cfg = NotifyConfig(receivers=(Receiver("ok", "webhook", ok.url), Receiver("dead", "webhook", _dead_url())),
                       attempts=2, backoff=3.0, concurrency=4)
    said: list[str] = []
    outcomes: list[Delivery] = []
    sink = _sink(stack, cfg, said, outcomes)
    sink.start()
    alerts = [_alert("dead", i) for i in range(8)]
    ids = [a.id for a in alerts]
    try:
        _produce_alerts(stack, [(a.id.encode(), msgspec.json.encode(a)) for a in alerts])
        _wait(lambda: sorted(ok.ids()) == ids and _table(stack, ids) == dict.fromkeys(ids, 1), 20,
              "the table and the live receiver")
        # Meanwhile the dead receiver is still retrying: nothing of it finished nor committed.
        assert sink.in_flight()["dead"] > 0
        assert sink_lag(stack.settings, cfg)["notify:dead"] > 0
        assert not [d for d in outcomes if d.receiver == "dead"]
        assert sink.drain(60) == {}
    finally:
        sink.close()
    dead = {d.alert_id: d for d in outcomes if d.receiver == "dead"}
    assert sorted(dead) == ids
    assert all(d.status == "failed" and d.attempts == 2 and "refused" in d.error.lower() for d in dead.values())
    assert any(line.startswith("receiver dead failing:") for line in said)
    rows = _deliveries(stack, ids)
    assert sorted(r[0] for r in rows if r[1] == "dead" and r[2] == "failed" and r[3] == 2) == ids
    assert sorted(r[0] for r in rows if r[1] == "ok" and r[2] == "delivered") == ids


def test_an_unreachable_table_is_said_retried_and_blocks_no_receiver(stack: Stack, http_receivers) -> None:  # type: ignore[no-untyped-def]
    ok = http_receivers()
    cfg = NotifyConfig(receivers=(Receiver("ok", "webhook", ok.url),), attempts=1)
    said: list[str] = []
    outcomes: list[Delivery] = []
    failed: list[int] = []
    sink = _sink(stack, cfg, said, outcomes, retry=0.2, on_store_failed=failed.append)
    sink.start()  # no worker yet: the embedded store is not reachable
    alerts = [_alert("nostore", i) for i in range(6)]
    ids = [a.id for a in alerts]
    try:
        _produce_alerts(stack, [(a.id.encode(), msgspec.json.encode(a)) for a in alerts])
        _wait(lambda: sorted(ok.ids()) == ids, 20, "the receiver")  # delivering does not wait for the table
        _wait(lambda: len(failed) >= 2, 20, "store retries")
        assert any("not stored in the alerts table yet" in line for line in said)
        assert any("delivery outcomes of ok not stored" in line for line in said)
        lag = sink_lag(stack.settings, cfg)
        assert lag["store"] >= 6 and lag["notify:ok"] >= 6  # nothing committed that is not recorded
        stack.start_worker()
        assert sink.drain(60) == {}
    finally:
        sink.close()
    assert _table(stack, ids) == dict.fromkeys(ids, 1)
    rows = _deliveries(stack, ids)
    assert sorted(r[0] for r in rows) == ids and all(r[1:3] == ["ok", "delivered"] for r in rows)
    assert len(ok.ids()) == 6  # delivered once: the outcomes waited, the deliveries were not repeated


# -- a `causelog rules run` killed with SIGKILL ----------------------------------------------------

RULE = """\
title: failed login
id: 11111111-1111-4111-8111-111111111111
logsource: {product: causelog}
detection:
    selection: {type: iam.login, outcome: failure}
    condition: selection
level: high
"""


def _rules_run(stack: Stack, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "rules", "run", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_notifications_in_flight_at_a_kill_are_delivered_after_the_restart(stack: Stack, tmp_path: Path,
                                                                            http_receivers) -> None:  # type: ignore[no-untyped-def]
    stack.start_worker()
    hook = http_receivers(failing=True)  # down until the runner is killed
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yml").write_text(RULE)
    (tmp_path / "notify.yaml").write_text(f"receivers:\n  - {{name: ops, type: webhook, url: '{hook.url}'}}\n"
                                          "attempts: 1000\nbackoff: 0.2\n")
    env = dict(stack.env, CAUSELOG_RULES=str(tmp_path / "rules"), CAUSELOG_NOTIFY=str(tmp_path / "notify.yaml"))
    p = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap, "acks": "all"})
    for i in range(12):
        ev = {"id": f"k{i:03d}", "time": fmt_us(1_764_200_000_000_000 + i * 60_000_000), "type": "iam.login",
              "outcome": "failure", "source": "okta://acme", "scope": "acme", "action": "x",
              "actor": {"id": "u", "assurance": "authenticated"}, "target": {"id": "t"}, "links": []}
        p.produce(stack.settings.topic_chains, encode_item(Item(event=ev, chain_id=f"c{i}", person="u")),
                  key=f"k{i % 3}".encode())
    assert p.flush(30) == 0

    first = _rules_run(stack, env)
    try:
        on_topic = stack.read_topic(stack.settings.topic_alerts, 12, timeout=60)
        ids = sorted({orjson.loads(m.value())["id"] for m in on_topic if
                      orjson.loads(m.value())["rule_id"] == "11111111-1111-4111-8111-111111111111"})
        assert len(ids) == 12
        _wait(lambda: _table(stack, ids) == dict.fromkeys(ids, 1), 30, "the alerts table")
        _wait(lambda: hook.requests >= 12, 30, "the receiver to be tried")
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert hook.bodies == []  # committed, stored, never delivered
    lag = sink_lag(stack.settings, NotifyConfig(receivers=(Receiver("ops", "webhook", hook.url),)),
                   f"{stack.settings.group}-rules")
    assert lag["store"] == 0 and lag["notify:ops"] > 0

    hook.failing.clear()
    second = _rules_run(stack, env, "--once", "--sink-wait", "60")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "rules runner ready" in err and "alert sink: " in err and "not finished" not in err
    assert set(hook.ids()) == set(ids)  # every alert at least once
    assert _table(stack, ids) == dict.fromkeys(ids, 1)
    rows = _deliveries(stack, ids)
    assert {r[0] for r in rows if r[1] == "ops" and r[2] == "delivered"} == set(ids)
    lag = sink_lag(stack.settings, NotifyConfig(receivers=(Receiver("ops", "webhook", hook.url),)))
    assert lag == {"store": 0, "notify:ops": 0}
    assert store_group(stack.settings) != notify_group(stack.settings, "ops")
