"""Notifications: notify.yaml, the receivers' payloads, and delivery to local HTTP receivers with
retries and backoff (the alert sink's threads and commits: tests/integration/test_sink_alerts.py)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.rules.model import Alert
from pipeline.rules.notify import NotifyConfig, Receiver, load_notify, payload
from pipeline.stream.notifier import Delivery, deliver

ALERT = Alert(id="a" * 32, rule_id="d9a89ab9-fd82-4c19-993c-8f16aa0eadbc", title="Unreviewed deploy", level="high",
              kind="detection", time="2026-11-27T02:14:00.000000Z", tags=("attack.t1195",), event_ids=("e1",),
              chain_id="c1", person="erin", summary="Unreviewed deploy: deploy.succeeded api by deploybot")


def test_load_notify_reads_receivers_and_secrets_from_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "notify.yaml"
    f.write_text("""
receivers:
  - {name: hook, type: webhook, url: "http://127.0.0.1:1/h", min_level: high}
  - {name: pd, type: pagerduty, url: "http://127.0.0.1:1/pd", routing_key_env: PD_KEY, rules: [r1]}
  - {name: sl, type: slack, url_env: SLACK_URL}
attempts: 3
backoff: 0.5
""")
    cfg = load_notify(f, {"PD_KEY": "k123", "SLACK_URL": "https://hooks.slack.test/x"})
    assert [r.name for r in cfg.receivers] == ["hook", "pd", "sl"] and (cfg.attempts, cfg.backoff) == (3, 0.5)
    assert cfg.receivers[1].routing_key == "k123" and cfg.receivers[2].url == "https://hooks.slack.test/x"
    hook, pd, _ = cfg.receivers
    assert hook.wants(ALERT) and not hook.wants(Alert(**{**_fields(ALERT), "level": "medium"}))
    assert not pd.wants(ALERT) and pd.wants(Alert(**{**_fields(ALERT), "rule_id": "r1"}))
    assert load_notify(tmp_path / "absent.yaml") == NotifyConfig()


def _fields(a: Alert) -> dict:
    return {f: getattr(a, f) for f in a.__struct_fields__}


@pytest.mark.parametrize(("text", "needle"), [
    ("receivers: [{type: email, url: 'http://x'}]", "receivers[0]: type 'email'"),
    ("receivers: [{type: webhook}]", "receivers[0]: needs `url`"),
    ("receivers: [{type: pagerduty, url: 'http://x', routing_key_env: NOPE}]", "routing_key_env"),
    ("receivers: [{type: webhook, url: 'http://x', min_level: urgent}]", "min_level 'urgent'"),
    ("attempts: 0", "attempts"),
])
def test_bad_notify_entries_are_named(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "notify.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]").replace("`", ".")):
        load_notify(f, {})


def test_payloads_of_each_receiver_type() -> None:
    pd = payload(Receiver("pd", "pagerduty", "http://x", routing_key="k"), ALERT)
    assert pd["event_action"] == "trigger" and pd["dedup_key"] == ALERT.id and pd["routing_key"] == "k"
    assert pd["payload"]["severity"] == "error" and pd["payload"]["summary"] == ALERT.summary
    am = payload(Receiver("am", "alertmanager", "http://x:9093/"), ALERT)
    assert am[0]["labels"]["alert_id"] == ALERT.id and am[0]["startsAt"] == ALERT.time
    assert Receiver("am", "alertmanager", "http://x:9093/").endpoint == "http://x:9093/api/v2/alerts"
    assert ALERT.id in payload(Receiver("s", "slack", "http://x"), ALERT)["text"]
    assert payload(Receiver("w", "webhook", "http://x"), ALERT)["id"] == ALERT.id


class _Receiver:
    """A local HTTP receiver that fails its first ``fail`` requests with 500."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[object] = []
        self.fail = fail
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.fail > 0:
                    outer.fail -= 1
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

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[tuple[_Receiver, _Receiver]]:
    ok, flaky = _Receiver(), _Receiver(fail=2)
    yield ok, flaky
    ok.close()
    flaky.close()


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook"


def test_delivery_with_retries_backoff_and_a_dead_receiver(receivers) -> None:  # type: ignore[no-untyped-def]
    ok, flaky = receivers
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    def send(r: Receiver, attempts: int = 4) -> Delivery | None:
        return deliver(r, ALERT, attempts=attempts, backoff=0.01, timeout=2, wait=wait,
                       now=lambda: "2026-11-27T02:15:00.000000Z")

    assert send(Receiver("ok", "webhook", ok.url)) == Delivery(
        alert_id=ALERT.id, receiver="ok", status="delivered", attempts=1, time="2026-11-27T02:15:00.000000Z")
    assert [(b["id"], b["summary"]) for b in ok.bodies] == [(ALERT.id, ALERT.summary)] and waits == []
    d = send(Receiver("flaky", "pagerduty", flaky.url, routing_key="k"))
    assert d is not None and (d.status, d.attempts) == ("delivered", 3)  # two 500s, then 202
    assert [b["dedup_key"] for b in flaky.bodies] == [ALERT.id] and waits == [0.01, 0.02]
    waits.clear()
    dead = send(Receiver("dead", "webhook", _dead_url()))
    assert dead is not None and dead.status == "failed" and dead.attempts == 4 and "refused" in dead.error.lower()
    assert waits == [0.01, 0.02, 0.04]  # exponential backoff, attempts - 1 waits
    assert dead.time == "2026-11-27T02:15:00.000000Z"


def test_a_delivery_stopped_between_attempts_has_no_outcome() -> None:
    calls: list[str] = []

    def post(url: str, body: object, timeout: float) -> None:
        calls.append(url)
        raise OSError("HTTP 503")

    got = deliver(Receiver("r", "webhook", "http://127.0.0.1:9/x"), ALERT, attempts=5, backoff=1.0, timeout=1,
                  wait=lambda seconds: len(calls) >= 2, post=post)
    assert got is None and len(calls) == 2  # stopping: left uncommitted, delivered again after a restart


def test_concurrency_and_unique_receiver_names(tmp_path: Path) -> None:
    f = tmp_path / "notify.yaml"
    f.write_text("receivers: [{name: a, type: webhook, url: 'http://x'}]\nconcurrency: 8\n")
    assert load_notify(f, {}).concurrency == 8
    f.write_text("receivers: [{name: a, type: webhook, url: 'http://x'}, {name: a, type: slack, url: 'http://y'}]\n")
    with pytest.raises(ConfigError, match="receiver name 'a' is used twice"):
        load_notify(f, {})
    f.write_text("concurrency: 0\n")
    with pytest.raises(ConfigError, match="concurrency"):
        load_notify(f, {})


def test_backoff_doubles_up_to_a_cap() -> None:
    waits: list[float] = []

    def fail(url: str, body: object, timeout: float) -> None:
        raise OSError("HTTP 500")

    d = deliver(Receiver("r", "webhook", "http://127.0.0.1:9/x"), ALERT, attempts=1500, backoff=1.0, timeout=1,
                wait=lambda s: waits.append(s) is not None, post=fail)
    assert d is not None and d.status == "failed" and d.attempts == 1500 and d.error == "HTTP 500"
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0] and max(waits) == 300.0 and len(waits) == 1499
