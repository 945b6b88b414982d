"""HTTP receivers (pipeline/sources/receiver.py, pipeline/cli/ingest_listen.py) without Kafka:
signature check, request routing to events / DLQ / status codes with an in-memory sink, and the
stdlib HTTP server in-process."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.cli.ingest_listen import github_kind, k8s_kind, read_secret
from pipeline.errors import ConfigError
from pipeline.model import decode, event_id
from pipeline.sources.receiver import Receiver, make_server, parse_listen, verify_github_signature

SECRET = b"It's a Secret to Everybody"
NOW = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
SHA = "a" * 39 + "1"


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


# -- verify_github_signature -----------------------------------------------------------------


def test_github_documented_example_signature() -> None:
    # The example from GitHub's "Validating webhook deliveries" documentation.
    assert verify_github_signature(
        SECRET, b"Hello, World!", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


def test_valid_signature_and_its_variants() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    assert verify_github_signature(SECRET, body, sign(body))
    assert verify_github_signature(SECRET, body, sign(body).upper().replace("SHA256=", "sha256="))
    assert verify_github_signature(SECRET, body, f"  {sign(body)}\t")


@pytest.mark.parametrize("header", [
    None, "", "sha256=", "sha1=" + "0" * 40, "0" * 64, "sha256=" + "g" * 64, "sha256=" + "ab" * 31,
    "sha256=" + "ab" * 33, "sha256 = " + "ab" * 32, "SHA256=" + "ab" * 32, "sha256=ünïcode",
])
def test_missing_or_malformed_headers_are_refused(header: str | None) -> None:
    assert not verify_github_signature(SECRET, b"{}", header)


def test_tampered_body_wrong_secret_and_empty_secret_are_refused() -> None:
    body = b'{"action": "opened"}'
    good = sign(body)
    assert not verify_github_signature(SECRET, body + b" ", good)
    assert not verify_github_signature(b"other secret", body, good)
    assert not verify_github_signature(b"", body, sign(body, b""))
    prefix_ok = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert not verify_github_signature(SECRET, body, prefix_ok)


# -- routing with an in-memory sink -----------------------------------------------------------


class MemorySink:
    """What a transactional sink would make visible, commit by commit; can be told to fail."""

    def __init__(self, fail_commit: bool = False) -> None:
        self.open: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []
        self.visible: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []
        self.cursors: list[bytes] = []
        self.fail_commit = fail_commit
        self.closed = False

    def send(self, topic, value, key, headers=()):  # type: ignore[no-untyped-def]
        self.open.append((topic, value, key, dict(headers)))

    def commit(self, cursor: bytes) -> None:
        if self.fail_commit:
            raise RuntimeError("broker down")
        self.visible.extend(self.open)
        self.open = []
        self.cursors.append(cursor)

    def last_cursor(self) -> bytes | None:
        return self.cursors[-1] if self.cursors else None

    def close(self) -> None:
        self.open = []
        self.closed = True

    def topic(self, name: str) -> list[tuple[str, bytes, bytes, dict[str, bytes]]]:
        return [r for r in self.visible if r[0] == name]


class Sinks:
    """A sink factory remembering every sink it made."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.made: list[MemorySink] = []
        self.fail_first = fail_first

    def __call__(self) -> MemorySink:
        sink = MemorySink(fail_commit=len(self.made) < self.fail_first)
        self.made.append(sink)
        return sink

    @property
    def last(self) -> MemorySink:
        return self.made[-1]


def github_receiver(sinks: Sinks, **kw: Any) -> Receiver:
    return Receiver(github_kind(SECRET, "acme"), sinks, topic="c", dlq="d", clock=lambda: NOW, **kw)


def k8s_receiver(sinks: Sinks, **kw: Any) -> Receiver:
    return Receiver(k8s_kind("acme", "prod"), sinks, topic="c", dlq="d", clock=lambda: NOW, **kw)


def push_payload() -> dict[str, Any]:
    return {
        "ref": "refs/heads/main", "before": "b" * 40, "after": SHA, "commits": [], "forced": False,
        "deleted": False, "created": False,
        "repository": {"id": 1, "name": "shop", "full_name": "acme/shop", "pushed_at": 1717243200},
        "sender": {"login": "alice", "id": 7, "type": "User"},
        "pusher": {"name": "alice", "email": "alice@example.com"},
    }


def gh_headers(body: bytes, event: str | None = "push", delivery: str | None = "d-1",
               signature: str | None = "sign") -> dict[str, str]:
    h = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/abc"}
    if event is not None:
        h["X-GitHub-Event"] = event
    if delivery is not None:
        h["X-GitHub-Delivery"] = delivery
    if signature == "sign":
        h["X-Hub-Signature-256"] = sign(body)
    elif signature is not None:
        h["X-Hub-Signature-256"] = signature
    return h


def test_signed_delivery_is_committed_then_acknowledged() -> None:
    sinks = Sinks()
    r = github_receiver(sinks)
    body = orjson.dumps(push_payload())
    resp = r.handle(body, gh_headers(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958"))
    assert resp.status == 200 and resp.body == {"ok": True, "events": 1, "rejected": 0}
    assert resp.label == "event=push delivery=72d3162e-cc78-11e3-81ab-4c9367dc0958"
    sink = sinks.last
    assert sink.open == [] and len(sink.cursors) == 1
    [(topic, value, key, headers)] = sink.visible
    ev = decode(value)
    assert (topic, key, headers) == ("c", b"acme", {})
    assert ev.id == event_id("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert ev.type == "git.push" and f"commit:{SHA}" in ev.links and ev.observed_time == NOW
    assert orjson.loads(sink.cursors[0]) == {"delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "event": "push"}


def test_redelivery_gives_the_same_event_id() -> None:
    sinks = Sinks()
    r = github_receiver(sinks)
    body = orjson.dumps(push_payload())
    for _ in range(2):
        assert r.handle(body, gh_headers(body)).status == 200
    ids = [decode(v).id for _, v, _, _ in sinks.last.topic("c")]
    assert len(ids) == 2 and ids[0] == ids[1]


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=" + "0" * 40, "garbage"])
def test_unsigned_or_badly_signed_delivery_is_401_and_nothing_is_touched(signature: str | None) -> None:
    sinks = Sinks()
    r = github_receiver(sinks)
    body = orjson.dumps(push_payload())
    resp = r.handle(body, gh_headers(body, signature=signature))
    assert resp.status == 401 and resp.body["error"] == "unauthorized"
    assert sinks.made == []  # not even a producer was created
    assert r.totals.refused == 1


def test_tampered_body_and_wrong_secret_are_401() -> None:
    sinks = Sinks()
    r = github_receiver(sinks)
    body = orjson.dumps(push_payload())
    tampered = body.replace(b"alice", b"mallory")
    assert r.handle(tampered, gh_headers(body) | {"X-Hub-Signature-256": sign(body)}).status == 401
    assert r.handle(body, gh_headers(body, signature=sign(body, b"wrong"))).status == 401
    # Unparseable junk with a bad signature is refused before parsing: no DLQ record either.
    assert r.handle(b"{not json", gh_headers(b"{not json", signature=sign(b"x"))).status == 401
    assert sinks.made == []


def test_bad_json_with_valid_signature_goes_to_the_dlq_and_is_400() -> None:
    sinks = Sinks()
    r = github_receiver(sinks)
    body = b'{"ref": "refs/heads/main",'
    resp = r.handle(body, gh_headers(body, delivery="d-9"))
    assert resp.status == 400 and resp.body["ok"] is False and resp.body["error"] == "bad_json"
    assert resp.body["rejected"] == 1 and resp.body["events"] == 0
    [(_, value, key, headers)] = sinks.last.visible
    assert value == body and key == b"github-webhook:delivery:d-9"
    assert headers["reason"] == b"bad_json" and b"not JSON" in headers["error"]
    assert headers["origin"] == b"github-webhook:delivery:d-9" and headers["source"] == b"github-webhook"
    assert len(sinks.last.cursors) == 1


@pytest.mark.parametrize(("body", "event", "reason"), [
    (b"[1, 2]", "push", "wrong_type"),
    (b'"text"', "push", "wrong_type"),
    (orjson.dumps(push_payload()), None, "invalid_value"),
])
def test_wrong_shape_or_missing_event_header_is_dead_lettered(body: bytes, event: str | None, reason: str) -> None:
    sinks = Sinks()
    r = github_receiver(sinks)
    resp = r.handle(body, gh_headers(body, event=event))
    assert resp.status == 400 and resp.body["error"] == reason
    [(topic, value, _, headers)] = sinks.last.visible
    assert topic == "d" and value == body and headers["reason"] == reason.encode()


def test_form_encoded_delivery_is_accepted() -> None:
    from urllib.parse import urlencode

    sinks = Sinks()
    r = github_receiver(sinks)
    body = urlencode({"payload": orjson.dumps(push_payload()).decode()}).encode()
    headers = gh_headers(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    assert r.handle(body, headers).status == 200
    [(_, value, _, _)] = sinks.last.visible
    assert decode(value).type == "git.push"
    missing = b"other=1"
    resp = r.handle(missing, gh_headers(missing) | {"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 400 and resp.body["error"] == "missing_field"


def test_delivery_without_id_gets_a_content_id_and_a_request_origin() -> None:
    sinks = Sinks()
    r = github_receiver(sinks)
    body = b"nope"
    resp = r.handle(body, gh_headers(body, delivery=None))
    assert resp.status == 400
    [(_, _, key, _)] = sinks.last.visible
    assert key.startswith(b"github-webhook:http:")
    good = orjson.dumps(push_payload())
    assert r.handle(good, gh_headers(good, delivery=None)).status == 200


def test_kafka_failure_is_503_then_a_fresh_sink_takes_the_retry() -> None:
    sinks = Sinks(fail_first=1)
    r = github_receiver(sinks)
    body = orjson.dumps(push_payload())
    resp = r.handle(body, gh_headers(body))
    assert resp.status == 503 and resp.headers == {"Retry-After": "5"}
    assert sinks.made[0].closed and sinks.made[0].visible == []
    assert r.handle(body, gh_headers(body)).status == 200
    assert len(sinks.made) == 2 and len(sinks.last.topic("c")) == 1
    assert (r.totals.failed, r.totals.events) == (1, 1)


def test_a_sink_that_cannot_be_created_is_503() -> None:
    def broken() -> MemorySink:
        raise RuntimeError("no broker")

    r = Receiver(github_kind(SECRET, "acme"), broken, topic="c", dlq="d")
    body = orjson.dumps(push_payload())
    assert r.handle(body, gh_headers(body)).status == 503


def test_oversized_body_is_413_before_anything_else() -> None:
    sinks = Sinks()
    r = github_receiver(sinks, max_body=100)
    body = orjson.dumps(push_payload())
    assert r.handle(body, gh_headers(body)).status == 413
    assert sinks.made == []


def test_an_event_too_big_for_kafka_is_dead_lettered_as_oversized() -> None:
    sinks = Sinks()
    r = github_receiver(sinks, max_record_bytes=600)
    payload = push_payload() | {"padding": "x" * 2000}
    body = orjson.dumps(payload)
    resp = r.handle(body, gh_headers(body))
    assert resp.status == 400 and resp.body["error"] == "oversized"
    [(topic, value, _, headers)] = sinks.last.visible
    assert topic == "d" and value == body[:600] and b"DLQ value truncated to 600 of" in headers["error"]


# -- Kubernetes ------------------------------------------------------------------------------


def audit_event(audit_id: str, name: str = "cfg") -> dict[str, Any]:
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id,
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/configmaps", "verb": "create",
        "user": {"username": "alice"},
        "objectRef": {"resource": "configmaps", "namespace": "default", "name": name, "apiVersion": "v1"},
        "responseStatus": {"code": 201},
        "requestReceivedTimestamp": "2024-06-01T12:00:00.000000Z", "stageTimestamp": "2024-06-01T12:00:00.100000Z",
    }


def event_list(*items: Any) -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": list(items)})


def test_event_list_is_one_transaction_with_the_last_audit_id_as_cursor() -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)
    resp = r.handle(event_list(audit_event("a1"), audit_event("a2", "other")), {"Content-Type": "application/json"})
    assert resp.status == 200 and resp.body == {"ok": True, "events": 2, "rejected": 0}
    sink = sinks.last
    assert [decode(v).id for _, v, _, _ in sink.topic("c")] == [event_id("k8s-audit", "a1"),
                                                                 event_id("k8s-audit", "a2")]
    assert all(decode(v).source == "k8s-audit://prod" for _, v, _, _ in sink.topic("c"))
    assert [orjson.loads(c) for c in sink.cursors] == [{"auditID": "a2"}]


def test_bad_items_are_dead_lettered_and_the_good_ones_kept() -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)
    bad = audit_event("a2")
    del bad["verb"]
    resp = r.handle(event_list(audit_event("a1"), bad, audit_event("a3")), {})
    assert resp.status == 200 and (resp.body["events"], resp.body["rejected"]) == (2, 1)
    assert resp.body["error"] == "missing_field"
    [(_, value, key, headers)] = sinks.last.topic("d")
    assert key == b"k8s-audit:audit:a2" and orjson.loads(value) == bad and headers["reason"] == b"missing_field"
    assert len(sinks.last.cursors) == 1


@pytest.mark.parametrize(("body", "reason"), [
    (b"{oops", "bad_json"),
    (b'"an event list"', "wrong_type"),
    (orjson.dumps({"kind": "EventList", "items": {"not": "a list"}}), "wrong_type"),
    (orjson.dumps({"kind": "EventList", "items": [1]}), "wrong_type"),
])
def test_malformed_batches_are_dead_lettered_whole_and_400(body: bytes, reason: str) -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)
    resp = r.handle(body, {})
    assert resp.status == 400 and resp.body["error"] == reason
    [(topic, value, key, headers)] = sinks.last.visible
    assert topic == "d" and value == body and key.startswith(b"k8s-audit:http:")
    assert headers["reason"] == reason.encode()


def test_all_items_bad_is_400_and_an_empty_list_is_200_with_no_commit() -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)
    assert r.handle(event_list({"kind": "Event"}), {}).status == 400
    resp = r.handle(event_list(), {})
    assert resp.status == 200 and resp.body["events"] == 0
    assert len(sinks.last.cursors) == 1  # only the first request committed anything


def test_the_same_batch_twice_gives_the_same_ids() -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)
    body = event_list(audit_event("a1"), audit_event("a2"))
    assert r.handle(body, {}).status == 200 and r.handle(body, {}).status == 200
    ids = [decode(v).id for _, v, _, _ in sinks.last.topic("c")]
    assert ids[:2] == ids[2:]


# -- plumbing ---------------------------------------------------------------------------------


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8089") == ("127.0.0.1", 8089)
    assert parse_listen("[::1]:8090") == ("::1", 8090)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("8089", ":8089", "host:", "host:99999", "host:http"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_listen(bad)


def test_read_secret_requires_a_set_non_empty_variable() -> None:
    assert read_secret("HOOK", {"HOOK": "s3cret"}) == b"s3cret"
    with pytest.raises(ConfigError, match="HOOK is not set or empty"):
        read_secret("HOOK", {})
    with pytest.raises(ConfigError, match="HOOK is not set or empty"):
        read_secret("HOOK", {"HOOK": ""})
    with pytest.raises(ConfigError, match="--secret-env"):
        read_secret(None, {})


@pytest.fixture
def http_server() -> Iterator[tuple[http.client.HTTPConnection, Sinks]]:
    sinks = Sinks()
    receiver = github_receiver(sinks, max_body=64 * 1024)
    server = make_server(receiver, "127.0.0.1:0")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield http.client.HTTPConnection(str(host), int(port), timeout=10), sinks
    finally:
        server.shutdown()
        server.server_close()


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, orjson.loads(data) if data else {}, resp


def test_over_http(http_server: tuple[http.client.HTTPConnection, Sinks], caplog: pytest.LogCaptureFixture) -> None:
    conn, sinks = http_server
    with caplog.at_level(logging.INFO, logger="causelog.receiver"):
        assert _call(conn, "GET", "/health")[:2] == (200, {"ok": True, "kind": "github-webhook"})
        assert _call(conn, "GET", "/other")[0] == 404
        status, _, resp = _call(conn, "PUT", "/", b"{}")
        assert status == 405 and resp.getheader("Allow") == "GET, POST"
        body = orjson.dumps(push_payload())
        status, answer, resp = _call(conn, "POST", "/", body, gh_headers(body, delivery="d-42"))
        assert (status, answer["events"]) == (200, 1) and resp.getheader("Content-Type") == "application/json"
        assert _call(conn, "POST", "/", body, gh_headers(body, signature=None))[0] == 401
        # Content-Length over the limit: 413 without reading the body.
        conn.putrequest("POST", "/")
        conn.putheader("Content-Length", str(10**9))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413 and orjson.loads(resp.read())["error"] == "too_large"
        conn.close()
    assert len(sinks.last.visible) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert any(" 200 POST / event=push delivery=d-42 events=1 rejected=0 " in line for line in lines), lines
    assert any(" 401 POST / " in line and "(refused)" in line for line in lines), lines


def test_a_bug_in_a_converter_is_500_and_produces_nothing(caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.sources.receiver import Kind

    def boom(_: Any) -> list[Any]:
        raise RecursionError("bug")

    kind = Kind("buggy", split=k8s_kind("acme", None).split, convert=boom)
    sinks = Sinks()
    r = Receiver(kind, sinks, topic="c", dlq="d")
    with caplog.at_level(logging.ERROR, logger="causelog.receiver"):
        resp = r.handle(event_list(audit_event("a1")), {})
    assert resp.status == 500 and resp.body["error"] == "internal_error"
    assert sinks.made == [] and "RecursionError" in caplog.text


def test_serve_refuses_an_unset_secret_before_touching_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli.ingest_listen import serve_github, serve_k8s
    from pipeline.settings import load

    monkeypatch.delenv("CAUSELOG_TEST_UNSET_SECRET", raising=False)
    s = load({"KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    with pytest.raises(ConfigError, match="CAUSELOG_TEST_UNSET_SECRET is not set or empty"):
        serve_github(s, "127.0.0.1:0", "CAUSELOG_TEST_UNSET_SECRET", None)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        serve_k8s(s, "nonsense", None, None)
