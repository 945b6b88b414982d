"""``GET /metrics`` of an HTTP receiver (pipeline/sources/receiver.py) over the stdlib server
in-process, with an in-memory sink: requests by status, events, DLQ reasons, latency."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cli.ingest_listen import github_kind
from pipeline.sources.receiver import Receiver, make_server

SECRET = b"metrics secret"
ROOT = Path(__file__).resolve().parents[3]


class Sink:
    def __init__(self) -> None:
        self.visible: list[tuple[str, bytes]] = []
        self.cursors: list[bytes] = []

    def send(self, topic, value, key, headers=()):  # type: ignore[no-untyped-def]
        self.visible.append((topic, value))

    def commit(self, cursor: bytes) -> None:
        self.cursors.append(cursor)

    def last_cursor(self) -> bytes | None:
        return self.cursors[-1] if self.cursors else None


def post(conn: http.client.HTTPConnection, body: bytes, *, signed: bool = True, delivery: str = "d") -> int:
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery}
    if signed:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    conn.request("POST", "/", body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def test_receiver_serves_its_metrics_without_credentials() -> None:
    sink = Sink()
    receiver = Receiver(github_kind(SECRET, "acme"), lambda: sink, topic="c", dlq="d",
                        clock=lambda: datetime(2024, 6, 1, tzinfo=UTC))
    server = make_server(receiver, "127.0.0.1:0")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        push = orjson.dumps({
            "ref": "refs/heads/main", "before": "b" * 40, "after": "a" * 40, "commits": [], "forced": False,
            "deleted": False, "created": False,
            "repository": {"id": 1, "name": "shop", "full_name": "acme/shop", "pushed_at": 1717243200},
            "sender": {"login": "alice", "id": 7, "type": "User"},
            "pusher": {"name": "alice", "email": "alice@example.com"},
        })
        assert post(conn, push, delivery="d-1") == 200
        assert post(conn, push, delivery="d-2") == 200
        assert post(conn, push, signed=False) == 401
        assert post(conn, b'{"ref": ', delivery="d-3") == 400
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/plain")
    finally:
        server.shutdown()
        server.server_close()
    s = {(x.name, tuple(sorted(x.labels.items()))): x.value
         for fam in text_string_to_metric_families(text) for x in fam.samples}

    def req(code: str) -> float:
        return s[("causelog_receiver_requests_total", (("code", code), ("receiver", "github-webhook")))]

    assert (req("200"), req("401"), req("400")) == (2, 1, 1)
    events = len([v for t, v in sink.visible if t == "c"])
    assert s[("causelog_receiver_events_total", (("receiver", "github-webhook"),))] == events == receiver.totals.events
    assert s[("causelog_records_rejected_total", (("reason", "bad_json"),))] == 1
    assert s[("causelog_receiver_request_seconds_count", (("receiver", "github-webhook"),))] == 4
    assert ("causelog_build_info", (("role", "receiver"), ("version", next(
        dict(k[1])["version"] for k in s if k[0] == "causelog_build_info")))) in s
    rows = re.findall(r"^\| `(causelog_[a-z_]+)` \|.*\| ([a-z ,()]+) \|$",
                      (ROOT / "deploy" / "grafana" / "README.md").read_text(), flags=re.M)
    served = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n, _ in s}
    assert {n for n, by in rows if "receiver" in by or by.strip() == "all"} - served == set()
