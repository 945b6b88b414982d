"""The worker's hot-path shortcuts give exactly what the slower paths they replace gave: the
``events`` send types, the number pre-check of ``decode_wire``, the raw-only parse for identity
joins, the integrity log indexes of a batch with duplicates, and the ``<prefix>.chains`` records."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from factories import event_bytes, event_dict

from pipeline.correlate.partition import Correlated
from pipeline.integrity.log import NO_INDEX, PartitionLog
from pipeline.integrity.merkle import leaf_hash
from pipeline.model import decode
from pipeline.model.codec import _odd_numbers, decode_wire
from pipeline.rules.engine import chains_record
from pipeline.store import EventWriter, Pending, Position, Store
from pipeline.store.writer import EVENT_COLUMNS, EVENT_SEND_TYPES, _log_batch, batch_token
from pipeline.stream.ingest import BatchHandler, learn_joins, with_raw
from pipeline.stream.people import People

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_send_types_match_the_events_table_but_for_low_cardinality(store: Store) -> None:
    rows = store.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'events'",
        {"db": store.database},
    ).rows
    table = {name: kind for name, kind in rows}
    assert len(EVENT_SEND_TYPES) == len(EVENT_COLUMNS)
    for name, sent in zip(EVENT_COLUMNS, EVENT_SEND_TYPES, strict=True):
        assert table[name].replace("LowCardinality(String)", "String") == sent, name


def test_rows_sent_as_plain_strings_read_back_as_written(store: Store) -> None:
    d = event_dict(1, scope="acme")
    raw = orjson.dumps(d)
    EventWriter(store).write([Pending(decode_wire(raw), raw, Position("t", 0, 5))], now=NOW)
    row = store.query(f"SELECT scope, type, source, actor_kind, outcome, toTypeName(scope) FROM {store.database}.events").rows
    assert row == [[d["scope"], d["type"], d["source"], d["actor"]["kind"], d["outcome"], "LowCardinality(String)"]]


@pytest.mark.parametrize(
    ("text", "odd"),
    [
        (b'{"a":1e400}', True),
        (b'{"a":1E+400}', True),
        (b'{"a":1.5e-0400}', True),
        (b'{"a":' + b"7" * 1000 + b"}", True),
        (b'{"a":1e40}', False),
        (b'{"a":"e000","b":"x-000"}', False),
        (b'{"a": [-2.5e-0400]}', True),
        (b'{"a":\n12.000E999}', True),
        (b'{"id":"ab5e123f","b":"5e1234"}', False),  # hex ids: not where a number starts
        (b'{"a":"x,1e400"}', True),  # a false positive: it only costs a full decode
        (b'{"a":' + b"7" * 999 + b',"b":' + b"7" * 999 + b"}", False),
    ],
)
def test_odd_numbers_flags_what_only_a_full_decode_can_judge(text: bytes, odd: bool) -> None:
    assert _odd_numbers(text) is odd


def test_with_raw_parses_only_the_payload_of_a_wire_event() -> None:
    d = dict(event_dict(3), source="github://acme/repo", raw={"pusher": {"name": "bob", "email": "b@x.io"}, "n": [1]})
    raw = orjson.dumps(d)
    wire = decode_wire(raw)
    full = decode(raw)
    assert with_raw(wire).raw == full.raw
    assert with_raw(full) is full


def test_learned_joins_from_wire_events_equal_those_from_full_decodes() -> None:
    payload = {"head_commit": {"author": {"email": "ann@acme.io", "username": "ann"},
                               "committer": {"email": "1234+ann@users.noreply.github.com", "username": "ann"}}}
    d = dict(event_dict(4), source="github://acme/repo", raw=payload)
    raw = orjson.dumps(d)
    wire = learn_joins([Pending(decode_wire(raw), raw, Position("t", 0, 0))])
    full = learn_joins([Pending(decode(raw), raw, Position("t", 0, 0))])
    assert wire == full
    assert wire, "the payload proves joins"


def test_log_batch_indexes_first_copies_and_skips_duplicates() -> None:
    a, b = event_bytes(1), event_bytes(2)
    batch = [Pending(decode_wire(v), v, Position("t", 0, o)) for o, v in enumerate([a, b, a])]
    unique = {batch[0].event.id: batch[0], batch[1].event.id: batch[1]}
    logged, logs = _log_batch(batch, unique, {}, [batch[0], batch[1]], {0: PartitionLog(0)})
    assert logged == [(0, leaf_hash(a)), (1, leaf_hash(b))]
    assert logs[0].size == 2 and logs[0].next_offset == 3
    # b stored before from this very position (a replay): it keeps its place, a is fresh.
    logged, logs = _log_batch(batch[:2], unique, {batch[1].event.id: batch[1].position}, [batch[0]],
                              {0: PartitionLog(0)})
    assert logged == [(0, leaf_hash(a))]
    assert logs[0].size == 2
    assert NO_INDEX == -1


def test_batch_token_depends_on_spans_and_ids_not_on_order() -> None:
    ps = [Position("t", 1, 7), Position("t", 0, 3), Position("t", 1, 5), Position("t", 0, 4)]
    assert batch_token(ps, ["x", "y"]) == batch_token(reversed(ps), ["y", "x"])
    assert batch_token(ps, ["x"]) != batch_token(ps[:3], ["x"])
    assert batch_token(ps) != batch_token(ps, ["x"])


def test_chains_records_are_the_engine_records(store: Store) -> None:
    values = [event_bytes(i, scope=f"s{i % 2}") for i in range(6)]
    kept = [Pending(decode_wire(v), v, Position("t", i % 2, i)) for i, v in enumerate(values)]
    handler = BatchHandler(EventWriter(store), lambda _: None, max_bytes=1 << 20, people=People())
    chains = {p.event.id: f"chain-{i}" for i, p in enumerate(kept) if i != 3}
    out = handler.chains_records(kept, Correlated(chains=chains))
    expect: dict[int, list[tuple[bytes, bytes]]] = {}
    for p in kept:
        expect.setdefault(p.position.partition, []).append(
            (p.event.scope.encode(), chains_record(p.envelope, chains.get(p.event.id), None, ())))
    assert out == expect
    assert orjson.loads(out[1][1][1])["chain_id"] is None
