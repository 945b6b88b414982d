"""CloudEvents over HTTP without Kafka: the HTTP binding's three modes (binary, structured,
batched), the mapping onto the envelope, and what is refused (401/415, nothing produced) or
rejected (400, the request in the DLQ, nothing partial), through the receiver with an
in-memory transactional sink."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.cli.ingest_http import authorizer, cloudevents_kind
from pipeline.errors import ConfigError
from pipeline.model import decode, event_id
from pipeline.sources import cloudevents as ce
from pipeline.sources.http_auth import bearer_check, hash_token, load_token_hashes, request_authorizer
from pipeline.sources.receiver import Receiver

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
TOKEN = "ci-ingest-token-0123456789"
SECRET = b"shared hmac secret"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Sink:
    """What a transactional sink makes visible, commit by commit."""

    def __init__(self) -> None:
        self.open: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []
        self.visible: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []
        self.commits = 0

    def send(self, topic, value, key, headers=()):  # type: ignore[no-untyped-def]
        self.open.append((topic, value, key, dict(headers)))

    def commit(self, cursor: bytes) -> None:
        self.visible.extend(self.open)
        self.open = []
        self.commits += 1

    def last_cursor(self) -> bytes | None:
        return None

    def topic(self, name: str) -> list[tuple[str, bytes, bytes, dict[str, bytes]]]:
        return [r for r in self.visible if r[0] == name]


@pytest.fixture
def sink() -> Sink:
    return Sink()


def receiver(sink: Sink) -> Receiver:
    auth = request_authorizer(secret=SECRET, bearer=bearer_check([hash_token(TOKEN)]))
    return Receiver(cloudevents_kind(auth, "acme"), lambda: sink, topic="c", dlq="d", clock=lambda: NOW)


def bearer(**headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **headers}


def structured(**over: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": "A234-1234-1234", "source": "https://deploybot.acme.io/pipelines/api",
             "type": "com.acme.Deploy.Succeeded", "time": "2026-11-27T01:24:47.123456789Z", "subject": "api",
             "datacontenttype": "application/json",
             "correlationid": "rel-2026-11-27", "causationid": "build-881",
             "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
             "authtype": "user", "authid": "dave@acme.io",
             "targetkind": "service", "environment": "prod",
             "links": "commit:9fceb02d0ae598e95dc970b74767f19372d61af8 deploy:deploybot:881",
             "data": {"replicas": 3, "password": "hunter2-but-longer"}}
    event.update(over)
    return {k: v for k, v in event.items() if v is not None}


def events(sink: Sink) -> list[Any]:
    return [decode(v) for _, v, _, _ in sink.topic("c")]


# -- structured mode ---------------------------------------------------------------------------


def test_structured_event_maps_onto_the_envelope(sink: Sink) -> None:
    body = orjson.dumps(structured())
    resp = receiver(sink).handle(body, bearer(**{"Content-Type": "application/cloudevents+json; charset=UTF-8"}))
    assert (resp.status, resp.body["events"]) == (200, 1)
    [e] = events(sink)
    assert e.id == event_id("cloudevents", "https://deploybot.acme.io/pipelines/api", "A234-1234-1234")
    assert e.type == "com.acme.deploy.succeeded" and (e.action, e.outcome) == ("succeeded", "success")
    assert e.time == datetime(2026, 11, 27, 1, 24, 47, 123456, tzinfo=UTC)
    assert (e.actor.id, e.actor.kind, e.actor.assurance) == ("dave@acme.io", "human", "claimed")
    assert (e.target.kind, e.target.id, e.target.environment) == ("service", "api", "prod")
    assert e.subject == "api" and e.scope == "acme"
    assert set(e.links) == {"request:rel-2026-11-27", "request:build-881", "request:A234-1234-1234", f"trace:{TRACE}",
                            "commit:9fceb02d0ae598e95dc970b74767f19372d61af8", "deploy:deploybot:881"}
    assert e.raw["type"] == "com.acme.Deploy.Succeeded"
    assert e.raw["data"]["password"].startswith("redacted:hmac-sha256:v1:")  # secrets never stored
    assert sink.commits == 1 and sink.topic("d") == []


def test_redelivery_has_the_same_id_and_a_missing_time_is_the_receive_time(sink: Sink) -> None:
    r = receiver(sink)
    body = orjson.dumps(structured(time=None))
    for _ in range(2):
        assert r.handle(body, bearer(**{"Content-Type": ce.STRUCTURED})).status == 200
    first, second = events(sink)
    assert first.id == second.id and first.time == NOW


def test_data_with_before_and_after_becomes_a_redacted_diff(sink: Sink) -> None:
    data = {"before": {"max_connections": 200, "db_password": "old-secret-value"},
            "after": {"max_connections": 50, "db_password": "new-secret-value"}}
    body = orjson.dumps(structured(type="config.changed", data=data))
    assert receiver(sink).handle(body, bearer(**{"Content-Type": ce.STRUCTURED})).status == 200
    [e] = events(sink)
    assert e.diff["changed"] == ["db_password", "max_connections"]
    assert e.diff["after"]["max_connections"] == 50
    assert "new-secret-value" not in orjson.dumps(e.diff).decode()


# -- binary mode -------------------------------------------------------------------------------


def binary_headers(**over: str) -> dict[str, str]:
    h = {"ce-specversion": "1.0", "ce-id": "evt-77", "ce-source": "/jenkins/api", "ce-type": "ci.run.failed",
         "ce-time": "2026-11-27T00:59:10Z", "ce-subject": "caf%C3%A9%20build", "ce-authtype": "service_account",
         "ce-authid": "jenkins", "Content-Type": "application/json"}
    h.update(over)
    return bearer(**h)


def test_binary_mode_takes_attributes_from_percent_encoded_headers(sink: Sink) -> None:
    resp = receiver(sink).handle(b'{"build": 881}', binary_headers())
    assert resp.status == 200
    [e] = events(sink)
    assert e.id == event_id("cloudevents", "/jenkins/api", "evt-77")
    assert e.subject == "café build" and e.outcome == "failure"
    assert (e.actor.id, e.actor.kind) == ("jenkins", "service")
    assert e.raw["data"] == {"build": 881} and e.raw["datacontenttype"] == "application/json"


@pytest.mark.parametrize(("content_type", "body", "stored"), [
    ("text/plain; charset=utf-8", "déployé".encode(), {"data": "déployé"}),
    ("application/octet-stream", b"\x00\xffbin", {"data_base64": base64.b64encode(b"\x00\xffbin").decode()}),
])
def test_binary_mode_non_json_data(sink: Sink, content_type: str, body: bytes, stored: dict[str, str]) -> None:
    assert receiver(sink).handle(body, binary_headers(**{"Content-Type": content_type})).status == 200
    [e] = events(sink)
    assert {k: e.raw[k] for k in stored} == stored


@pytest.mark.parametrize(("raw", "value"), [
    ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro € 😀"),          # the spec's example
    ("caf%c3%a9", "café"),                                      # lower-case hex accepted
    ('"quoted \\"value\\" 100%25"', 'quoted "value" 100%'),  # older senders quote
    ("plain/value", "plain/value"),
])
def test_header_values_are_unquoted_and_percent_decoded(raw: str, value: str) -> None:
    assert ce.header_value(raw) == value


def test_overlong_utf8_in_a_header_is_rejected(sink: Sink) -> None:
    resp = receiver(sink).handle(b"{}", binary_headers(**{"ce-subject": "x%C0%A0y"}))
    assert (resp.status, resp.body["error"]) == (400, "invalid_value") and sink.topic("c") == []


def test_a_ce_datacontenttype_header_is_refused_in_binary_mode(sink: Sink) -> None:
    resp = receiver(sink).handle(b"{}", binary_headers(**{"ce-datacontenttype": "application/json"}))
    assert (resp.status, resp.body["field"]) == (400, "$.datacontenttype")


def test_binary_mode_invalid_json_data_is_dead_lettered_as_its_structured_form(sink: Sink) -> None:
    resp = receiver(sink).handle(b'{"build": ', binary_headers())
    assert (resp.status, resp.body["error"]) == (400, "bad_json")
    assert sink.topic("c") == []
    [(_, value, key, headers)] = sink.topic("d")
    assert key == b"cloudevents:event:/jenkins/api#evt-77" and headers["reason"] == b"bad_json"
    assert value == b'{"build": '  # the body could not be parsed: kept verbatim


def test_binary_mode_invalid_event_keeps_headers_in_the_dlq_record(sink: Sink) -> None:
    resp = receiver(sink).handle(b"{}", binary_headers(**{"ce-specversion": "0.3"}))
    assert (resp.status, resp.body["field"]) == (400, "$.specversion")
    [(_, value, _, headers)] = sink.topic("d")
    assert orjson.loads(value)["id"] == "evt-77" and headers["reason"] == b"invalid_value"


# -- batched mode ------------------------------------------------------------------------------


def test_batch_is_one_transaction(sink: Sink) -> None:
    batch = [structured(id=f"b-{i}") for i in range(3)]
    resp = receiver(sink).handle(orjson.dumps(batch), bearer(**{"Content-Type": ce.BATCH}))
    assert (resp.status, resp.body["events"]) == (200, 3)
    assert sink.commits == 1
    assert {e.id for e in events(sink)} == {event_id("cloudevents", batch[0]["source"], f"b-{i}") for i in range(3)}


def test_a_batch_with_one_invalid_event_is_refused_whole(sink: Sink) -> None:
    batch = [structured(id="ok-1"), structured(id=""), structured(id="ok-3")]
    body = orjson.dumps(batch)
    resp = receiver(sink).handle(body, bearer(**{"Content-Type": ce.BATCH}))
    assert (resp.status, resp.body["field"], resp.body["events"]) == (400, "$[1].id", 0)
    assert sink.topic("c") == []  # nothing partial
    [(_, value, _, headers)] = sink.topic("d")
    assert value == body and headers["field"] == b"$[1].id"


def test_empty_batch_is_200_with_nothing(sink: Sink) -> None:
    resp = receiver(sink).handle(b"[]", bearer(**{"Content-Type": ce.BATCH}))
    assert (resp.status, resp.body["events"]) == (200, 0) and sink.visible == []


@pytest.mark.parametrize(("body", "field", "reason"), [
    (b'{"specversion": "1.0"}', "$", "wrong_type"),                          # not an array
    (b"[1]", "$[0]", "wrong_type"),
    (orjson.dumps([structured(type=None)]), "$[0].type", "missing_field"),
    (orjson.dumps([structured(time="yesterday")]), "$[0].time", "invalid_value"),
    (orjson.dumps([structured(BadName="x")]), "$[0].BadName", "invalid_value"),
    (orjson.dumps([structured(links="commit:abc oops")]), "$[0].links", "invalid_value"),
    (orjson.dumps([structured(data_base64="AA==")]), "$[0]", "invalid_value"),   # data and data_base64
])
def test_invalid_batches_are_400_and_dead_lettered(sink: Sink, body: bytes, field: str, reason: str) -> None:
    resp = receiver(sink).handle(body, bearer(**{"Content-Type": ce.BATCH}))
    assert (resp.status, resp.body["error"], resp.body["field"]) == (400, reason, field)
    assert sink.topic("c") == [] and len(sink.topic("d")) == 1


# -- refused: nothing produced -----------------------------------------------------------------


def _sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Basic {TOKEN}"},
    {"X-Causelog-Signature-256": _sign(b"other body")},
    {"X-Causelog-Signature-256": _sign(b"{}", b"wrong secret")},
])
def test_no_or_bad_credentials_are_401_and_nothing_is_produced(headers: dict[str, str]) -> None:
    made: list[Sink] = []
    r = Receiver(cloudevents_kind(request_authorizer(secret=SECRET, bearer=bearer_check([hash_token(TOKEN)])),
                                  "acme"), lambda: made.append(Sink()) or made[-1], topic="c", dlq="d")
    body = orjson.dumps(structured())
    resp = r.handle(body, {"Content-Type": ce.STRUCTURED, **headers})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert made == [] and r.totals.refused == 1  # no sink, no DLQ record: nothing touched


def test_hmac_signed_request_is_accepted(sink: Sink) -> None:
    body = orjson.dumps(structured())
    resp = receiver(sink).handle(body, {"Content-Type": ce.STRUCTURED, "X-Causelog-Signature-256": _sign(body)})
    assert resp.status == 200


@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/json"},                                  # no ce-* headers: not a CloudEvent
    {"Content-Type": "text/plain"},
    {},
    {"Content-Type": "application/cloudevents+xml"},                      # another event format
    {"Content-Type": "application/cloudevents+avro", "ce-specversion": "1.0"},
])
def test_unsupported_media_types_are_415_and_nothing_is_produced(sink: Sink, headers: dict[str, str]) -> None:
    resp = receiver(sink).handle(orjson.dumps(structured()), bearer(**headers))
    assert (resp.status, resp.body["error"]) == (415, "unsupported_media_type")
    assert sink.visible == [] and sink.open == []


# -- pure mapping details ----------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [
    ("com.github.pull_request.opened", "com.github.pull_request.opened"),
    ("dev.cdevents.service.deployed.0.3.0", "dev.cdevents.service.deployed.0.3.0"),
    ("Deployed", "cloudevents.deployed"),
    ("42.things", "cloudevents.42.things"),
    ("io.Acme/Thing Changed", "io.acme_thing_changed"),
])
def test_types_are_normalised(given: str, expected: str) -> None:
    e = ce.to_event(structured(type=given, links=None), scope="s", received_at=NOW)
    assert e.type == expected


def test_authcontext_and_unknown_actor() -> None:
    anon = ce.to_event(structured(authtype="unauthenticated", authid=None), scope="s", received_at=NOW)
    assert (anon.actor.id, anon.actor.assurance) == ("unknown", "none")
    key = ce.to_event(structured(authtype="api_key", authid="key-17"), scope="s", received_at=NOW)
    assert (key.actor.id, key.actor.kind) == ("key-17", "service")


def test_system_actor_and_causation_chains_cause_and_effect() -> None:
    system = ce.to_event(structured(authtype="system", authid=None), scope="s", received_at=NOW)
    assert (system.actor.id, system.actor.kind) == ("system", "service")
    cause = ce.to_event(structured(id="order-123", correlationid="txn-1", causationid=None, links=None,
                                   traceparent=None), scope="s", received_at=NOW)
    effect = ce.to_event(structured(id="pay-9", correlationid=None, causationid="order-123", links=None,
                                    traceparent=None), scope="s", received_at=NOW)
    plain = ce.to_event(structured(correlationid=None, causationid=None, links=None, traceparent=None),
                        scope="s", received_at=NOW)
    assert set(cause.links) == {"request:txn-1", "request:order-123"}
    assert set(effect.links) == {"request:order-123", "request:pay-9"}
    assert plain.links == ()


def test_zero_trace_ids_and_bad_traceparents_give_no_trace_link() -> None:
    for tp in ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage", "00-xyz"):
        e = ce.to_event(structured(traceparent=tp, links=None), scope="s", received_at=NOW)
        assert not any(link.startswith("trace:") for link in e.links)


# -- token file --------------------------------------------------------------------------------


def test_token_file_forms_and_roles(tmp_path: Any) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(orjson.dumps({"tokens": [
        {"name": "ci", "sha256": hash_token("a"), "roles": ["ingest"]},
        {"name": "reader", "sha256": hash_token("b"), "roles": ["reader"]},
    ]}))
    assert load_token_hashes(path) == [hash_token("a")]
    path.write_bytes(orjson.dumps([{"name": "ci", "hash": "sha256:" + hash_token("c"), "role": "ingest"}]))
    check = bearer_check(load_token_hashes(path))
    assert check("c") and not check("a") and not check("")
    path.write_bytes(b'[{"name": "x", "roles": ["ingest"]}]')
    with pytest.raises(ConfigError, match="no sha256 hash"):
        load_token_hashes(path)


def test_a_receiver_needs_credentials_to_check(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="whom to trust"):
        authorizer(None, None)
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ConfigError, match="NOPE"):
        authorizer("NOPE", None)
    empty = tmp_path / "t.json"
    empty.write_text("[]")
    with pytest.raises(ConfigError, match="no token with role ingest"):
        authorizer(None, empty)


def test_token_file_is_reread_when_it_changes_and_a_broken_edit_keeps_the_last_good(tmp_path: Any) -> None:
    import os

    from pipeline.sources.http_auth import TokenFile

    path = tmp_path / "tokens.json"

    def write(doc: Any, stamp: int) -> None:
        path.write_bytes(doc if isinstance(doc, bytes) else orjson.dumps(doc))
        os.utime(path, ns=(stamp, stamp))  # distinct mtimes even within one clock tick

    write([{"name": "a", "sha256": hash_token("old"), "roles": ["ingest"]}], 1_000_000_000)
    check = TokenFile(path)
    assert check("old") and not check("new")
    write([{"name": "b", "sha256": hash_token("new"), "roles": ["ingest"]}], 2_000_000_000)
    assert check("new") and not check("old")  # added and revoked without a restart
    write(b"{not json", 3_000_000_000)
    assert check("new") and check.error is not None and "not JSON" in check.error
    path.unlink()
    assert check("new")
