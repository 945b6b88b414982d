"""Debezium change events: diff shape, value policies, keys, tombstones (synthetic events)."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from pipeline.errors import DecodeError
from pipeline.model import decode, encode
from pipeline.sources import debezium
from pipeline.sources.redact import redact_value

TOPIC = "shop.public.customers"


def _pg(
    op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, **source: Any
) -> dict[str, Any]:
    return {
        "op": op,
        "ts_ms": 1714557600500,
        "before": before,
        "after": after,
        "source": {
            "version": "2.6.0.Final",
            "connector": "postgresql",
            "name": "shop",
            "ts_ms": 1714557600000,
            "snapshot": "false",
            "db": "shopdb",
            "schema": "public",
            "table": "customers",
            "txId": 731,
            "lsn": 24023128,
            **source,
        },
        "transaction": None,
    }


BEFORE = {
    "id": 7,
    "email": "ann@example.com",
    "password_hash": "$2b$12$abc",
    "tier": "gold",
    "blob": "__debezium_unavailable_value",
}
AFTER = {
    "id": 7,
    "email": "anne@example.com",
    "password_hash": "$2b$12$abc",
    "tier": "gold",
    "blob": "__debezium_unavailable_value",
}


def test_update_default_policy_hashes_every_value() -> None:
    (event,) = debezium.to_events(_pg("u", BEFORE, AFTER), scope="acme", topic=TOPIC, key={"id": 7})
    assert decode(encode(event)) == event
    assert (event.type, event.action, event.outcome) == ("data.changed", "update", "success")
    diff = event.diff
    assert diff["table"] == "shopdb.public.customers" and diff["op"] == "u" and diff["values"] == "hash"
    assert diff["changed"] == ["email"]  # blob's placeholder is not a change
    assert diff["before"] == {"email": redact_value("ann@example.com")}
    assert diff["after"] == {"email": redact_value("anne@example.com")}
    assert diff["primary_key"] == {"id": redact_value(7)}
    assert event.links == ("request:pgtx:shop:731",)
    assert event.source_seq == 24023128
    assert (event.target.kind, event.target.id, event.target.name) == (
        "db.table",
        "shop/shopdb/public.customers",
        "customers",
    )
    data = encode(event).decode()
    for value in ("ann@example.com", "anne@example.com", "$2b$12$abc", "gold"):
        assert value not in data
    assert event.raw["key_fields"] == ["id"] and "before" not in event.raw and "after" not in event.raw


def test_value_policies() -> None:
    (kept,) = debezium.to_events(_pg("u", BEFORE, AFTER), scope="acme", topic=TOPIC, values="keep")
    assert kept.diff["after"] == {"email": "anne@example.com"}
    before = dict(BEFORE, api_token="tok-1")
    after = dict(AFTER, api_token="tok-2")
    (red,) = debezium.to_events(_pg("u", before, after), scope="acme", topic=TOPIC, values="redact")
    assert red.diff["changed"] == ["email", "api_token"]
    assert red.diff["after"]["email"] == "anne@example.com"
    assert red.diff["after"]["api_token"] == redact_value("tok-2")
    with pytest.raises(DecodeError):
        debezium.to_events(_pg("u", BEFORE, AFTER), scope="acme", topic=TOPIC, values="plain")


def test_type_strict_comparison_and_nulls() -> None:
    (event,) = debezium.to_events(
        _pg("u", {"id": 1, "n": 1, "x": None}, {"id": 1, "n": 1.0, "x": None}), scope="acme", topic=TOPIC
    )
    assert event.diff["changed"] == ["n"]
    (created,) = debezium.to_events(_pg("c", None, {"id": 1, "x": None}), scope="acme", topic=TOPIC)
    assert created.diff["after"] == {"id": redact_value(1), "x": None}
    assert created.diff["changed"] == ["id", "x"] and created.diff["before"] is None


def test_ops() -> None:
    row = {"id": 1, "v": "a"}
    expected = {
        "c": ("insert", ["id", "v"]),
        "r": ("snapshot", []),
        "d": ("delete", ["id", "v"]),
        "t": ("truncate", []),
    }
    for op, (action, changed) in expected.items():
        before = row if op == "d" else None
        after = row if op in ("c", "r") else None
        (event,) = debezium.to_events(_pg(op, before, after), scope="acme", topic=TOPIC)
        assert (event.action, event.diff["changed"]) == (action, changed)
    with pytest.raises(DecodeError) as err:
        debezium.to_events(_pg("x", None, row), scope="acme", topic=TOPIC)
    assert err.value.field == "$.op"
    with pytest.raises(DecodeError):
        debezium.to_events(_pg("d", None, None), scope="acme", topic=TOPIC)


def test_with_schema_envelope_key_and_same_change_same_id() -> None:
    plain = _pg("u", BEFORE, AFTER)
    wrapped = {
        "schema": {"type": "struct", "name": "shop.public.customers.Envelope"},
        "payload": copy.deepcopy(plain),
    }
    key = {"schema": {"type": "struct"}, "payload": {"id": 7}}
    (a,) = debezium.to_events(plain, scope="acme", topic=TOPIC, key={"id": 7})
    (b,) = debezium.to_events(wrapped, scope="acme", topic=TOPIC, key=key)
    assert a.id == b.id
    assert b.raw["schema_name"] == "shop.public.customers.Envelope"
    # snapshot rows share one LSN; the key tells them apart
    r1 = debezium.to_events(_pg("r", None, {"id": 1}), scope="acme", topic=TOPIC, primary_key=["id"])[0]
    r2 = debezium.to_events(_pg("r", None, {"id": 2}), scope="acme", topic=TOPIC, primary_key=["id"])[0]
    assert r1.id != r2.id and r1.diff["primary_key"] == {"id": redact_value(1)}


def test_transaction_id_from_transaction_block_and_server_override() -> None:
    change = _pg("c", None, {"id": 1})
    del change["source"]["txId"]
    change["transaction"] = {"id": "990:24023128", "total_order": 1, "data_collection_order": 1}
    (event,) = debezium.to_events(change, scope="acme", topic=TOPIC, server="prod-db-1")
    assert event.links == ("request:pgtx:prod-db-1:990",)
    assert event.source == "debezium://prod-db-1"


def test_traceparent_header() -> None:
    (event,) = debezium.to_events(
        _pg("c", None, {"id": 1}),
        scope="acme",
        topic=TOPIC,
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    assert "trace:4bf92f3577b34da6a3ce929d0e0e4736" in event.links


def test_tombstones_and_non_change_messages_are_counted() -> None:
    stats: Counter[str] = Counter()
    assert debezium.to_events(None, scope="acme", topic=TOPIC, stats=stats) == []
    assert debezium.to_events({"schema": {}, "payload": None}, scope="acme", topic=TOPIC, stats=stats) == []
    assert (
        debezium.to_events({"status": "BEGIN", "id": "571:53195829"}, scope="acme", topic=TOPIC, stats=stats)
        == []
    )
    assert debezium.to_events({"ts_ms": 1714557600000}, scope="acme", topic=TOPIC, stats=stats) == []
    assert debezium.to_events(dict(_pg("m", None, None)), scope="acme", topic=TOPIC, stats=stats) == []
    assert stats == {"tombstone": 2, "transaction_metadata": 1, "heartbeat": 1, "message": 1}


def test_time_prefers_commit_time_then_processing_time() -> None:
    (event,) = debezium.to_events(_pg("c", None, {"id": 1}), scope="acme", topic=TOPIC)
    assert event.time.isoformat() == "2024-05-01T10:00:00+00:00"
    (event,) = debezium.to_events(_pg("c", None, {"id": 1}, ts_ms=0), scope="acme", topic=TOPIC)
    assert event.time.isoformat() == "2024-05-01T10:00:00.500000+00:00"


def test_mysql_schema_change_event() -> None:
    ddl = {
        "source": {
            "connector": "mysql",
            "name": "inv",
            "ts_ms": 1714557600000,
            "db": "inventory",
            "file": "b.000003",
            "pos": 154,
        },
        "databaseName": "inventory",
        "ddl": "ALTER TABLE customers ADD COLUMN note VARCHAR(255) DEFAULT 'secret default'",
        "tableChanges": [{"type": "ALTER", "id": '"inventory"."customers"', "table": {}}],
    }
    (event,) = debezium.to_events(ddl, scope="acme", topic="inv")
    assert (event.type, event.action) == ("db.ddl", "alter table")
    assert event.raw["ddl"]["normalized"] == "ALTER TABLE customers ADD COLUMN note VARCHAR(?) DEFAULT ?"
    assert "secret default" not in encode(event).decode()
