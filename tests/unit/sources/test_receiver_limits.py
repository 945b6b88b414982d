"""Receivers refuse unacceptable bodies with a 4xx and a reason, count them and produce nothing
(issue 14); a 500 is only for a fault of the receiver, with its request id."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from test_receiver import (
    Sinks,
    audit_event,
    event_list,
    gh_headers,
    github_receiver,
    k8s_receiver,
    push_payload,
)

from pipeline.sources.receiver import MAX_BODY_DEPTH


def deep(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = {"a": node}
    return node


def k8s_with_request_object(obj: Any) -> bytes:
    item = audit_event("a1")
    item["requestObject"] = obj
    return event_list(item)


@pytest.mark.parametrize("depth", [300, 900, 10_000])
def test_k8s_batch_with_a_deeply_nested_request_object_is_400_too_deep_and_nothing_produced(depth: int) -> None:
    # The regression of issue 14: depths between orjson's and Python's limits answered 500
    # "internal error" (a RecursionError), deeper ones were dead-lettered whole as bad_json.
    sinks = Sinks()
    r = k8s_receiver(sinks)
    item = orjson.dumps(audit_event("a1"))[:-1] + b',"requestObject":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + item + b"]}"
    resp = r.handle(body, {"Content-Type": "application/json"})
    assert resp.status == 400
    assert resp.body["error"] == "too_deep"
    assert str(MAX_BODY_DEPTH) in resp.body["message"]
    assert all(not s.visible and not s.open for s in sinks.made)
    assert r.totals.invalid == 1


def test_a_request_object_as_deep_as_the_envelope_allows_is_stored() -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)
    # items[] object (depth 3) + requestObject: the event's raw may nest 64 levels.
    body = k8s_with_request_object(deep(MAX_BODY_DEPTH - 4))
    resp = r.handle(body, {"Content-Type": "application/json"})
    assert resp.status == 200, resp.body
    assert resp.body["events"] == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_wrong_content_type_is_415_counted_and_nothing_produced(content_type: str) -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)
    resp = r.handle(event_list(audit_event("a1")), {"Content-Type": content_type})
    assert resp.status == 415
    assert resp.body["error"] == "unsupported_media_type"
    assert all(not s.visible for s in sinks.made)
    assert r.totals.invalid == 1


@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8", "application/merge-patch+json"])
def test_json_content_types_and_none_are_taken(content_type: str | None) -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)
    headers = {} if content_type is None else {"Content-Type": content_type}
    assert r.handle(event_list(audit_event("a1")), headers).status == 200


def test_github_form_encoded_deliveries_are_still_taken() -> None:
    from urllib.parse import urlencode

    sinks = Sinks()
    r = github_receiver(sinks)
    body = urlencode({"payload": orjson.dumps(push_payload()).decode()}).encode()
    headers = gh_headers(body)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    assert r.handle(body, headers).status == 200


def test_too_large_is_413_and_counted() -> None:
    r = k8s_receiver(Sinks(), max_body=100)
    resp = r.handle(event_list(audit_event("a1")), {"Content-Type": "application/json"})
    assert resp.status == 413 and resp.body["error"] == "too_large"
    assert r.totals.invalid == 1


def test_a_receiver_fault_is_500_with_the_request_id_in_the_answer_and_the_log(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    sinks = Sinks()
    r = k8s_receiver(sinks)

    def broken(rec: Any) -> Any:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(r, "_convert", broken)
    with caplog.at_level(logging.ERROR, logger="causelog.receiver"):
        resp = r.handle(event_list(audit_event("a1")), {"Content-Type": "application/json"})
    assert resp.status == 500
    rid = resp.body["request_id"]
    assert rid in resp.body["message"]
    assert any(rid in rec.getMessage() for rec in caplog.records)
    assert all(not s.visible for s in sinks.made)
