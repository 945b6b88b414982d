"""Every Debezium serde sample normalizes into a valid envelope that stores no column value
(pipeline/sources/debezium.py).

PROVENANCE.md: 4 MySQL-connector events on ``inventory.customers``: serde-with-schema.json
(``schema`` + ``payload``, op c), serde-without-schema.json (payload only, op c), serde-update.json
and serde-unknown-property.json (op u, the latter with an extra column). ``source.query`` of all
four holds an INSERT with literal values. Run with ``pytest -s`` for counts per type.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from _audit_corpus import DEBEZIUM_DIR, missing
from _sources_corpus import check_envelope, print_counts

from pipeline.model import Event, encode
from pipeline.sources import debezium

if _reason := missing(DEBEZIUM_DIR):
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

TOPIC = "mysql-server-1.inventory.customers"
VALUES = ("Anne", "Kretchmar", "annek@noanswer.org", "Anne-Marie", "1004")


def _event(name: str, **kw: object) -> Event:
    value = json.loads((DEBEZIUM_DIR / name).read_text(encoding="utf-8"))
    (event,) = debezium.to_events(value, scope="corpus", topic=TOPIC, **kw)  # type: ignore[arg-type]
    return event


def test_every_sample_normalizes_and_stores_no_value() -> None:
    counts: Counter[str] = Counter()
    files = sorted(p.name for p in DEBEZIUM_DIR.glob("*.json"))
    assert len(files) == 4
    for name in files:
        event = _event(name)
        check_envelope(event)
        data = encode(event).decode()
        for value in VALUES:
            assert f'"{value}"' not in data and f"'{value}'" not in data, (name, value)
        assert ":1004" not in data  # the primary key value, as a JSON number
        assert event.raw["source"]["query"]["normalized"] == (
            "INSERT INTO customers (first_name, last_name, email) VALUES (?, ?, ?)"
        )
        assert event.source_seq == "mysql-bin.000003:154:0"
        assert event.links == ()  # MySQL, gtid null: no transaction key
        counts[f"{event.type} {event.action}"] += 1
    print_counts("debezium", counts)
    assert counts == {"data.changed insert": 2, "data.changed update": 2}


def test_schema_envelope_is_unwrapped_and_the_same_change_has_the_same_id() -> None:
    with_schema = _event("serde-with-schema.json")
    without = _event("serde-without-schema.json")
    assert with_schema.id == without.id and with_schema.diff == without.diff
    assert with_schema.raw["schema_name"] == "mysql-server-1.inventory.customers.Envelope"
    assert with_schema.diff["changed"] == ["id", "first_name", "last_name", "email"]
    # source.ts_ms is 0 (unknown): the payload's ts_ms is the time
    assert with_schema.time.isoformat() == "2016-06-09T16:56:51.815000+00:00"


def test_updates_name_only_the_changed_column() -> None:
    update = _event("serde-update.json")
    extra = _event("serde-unknown-property.json")
    assert update.diff["changed"] == extra.diff["changed"] == ["first_name"]
    assert update.diff["before"]["first_name"] != update.diff["after"]["first_name"]
    assert update.id != extra.id  # different content at the same binlog position
    kept = _event("serde-update.json", values="keep", primary_key=["id"])
    assert kept.diff["before"] == {"first_name": "Anne-Marie"} and kept.diff["after"] == {
        "first_name": "Anne"
    }
    assert kept.diff["primary_key"] == {"id": 1004}
    (target,) = {(update.target.kind, update.target.id)}
    assert target == ("db.table", "mysql-server-1/inventory/customers")
