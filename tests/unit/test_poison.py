"""No poison record: whatever bytes arrive, the worker's batch step rejects them to the DLQ with
a reason (or stores them) and goes on; it never raises because of one record (issue 14).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from factories import event_bytes, event_dict

from pipeline.correlate import partition as partition_mod
from pipeline.errors import DecodeError
from pipeline.model import codec
from pipeline.model.codec import MAX_DEPTH, check_depth, decode, decode_wire
from pipeline.store import EventWriter, Position, Store
from pipeline.stream import ingest
from pipeline.stream.correlation import Correlation
from pipeline.stream.ingest import BatchHandler, Record, Rejection, split

TOPIC = "causelog.changes"


def rec(value: bytes | None, offset: int, partition: int = 0) -> Record:
    return Record(value, Position(TOPIC, partition, offset))


def with_raw(raw_json: bytes, **fields: Any) -> bytes:
    """A valid envelope whose ``raw`` is the given JSON text, spliced in verbatim."""
    return orjson.dumps(dict(event_dict(1), raw="RAW", **fields)).replace(b'"RAW"', raw_json)


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


# -- depth -------------------------------------------------------------------------------------


def test_the_10000_deep_record_of_the_issue_is_rejected_as_too_deep_not_a_recursion_error() -> None:
    data = with_raw(nested(10_000))
    assert len(data) > 60_000
    good, bad = split([rec(data, 7)], 1 << 20)
    assert good == []
    assert bad[0].error.reason == "too_deep"
    assert "64" in bad[0].error.message


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH])
def test_raw_may_nest_64_levels_but_not_65(depth: int) -> None:
    data = with_raw(nested(depth - 1))  # + the envelope object itself
    if depth <= MAX_DEPTH:
        assert decode_wire(data).id == event_dict(1)["id"]
        assert decode(data).raw is not None
    assert MAX_DEPTH - 1 == 64


def test_one_level_too_deep_is_rejected() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_wire(with_raw(nested(MAX_DEPTH)))
    assert caught.value.reason == "too_deep"


@pytest.mark.parametrize("data", [
    b"[" * 100_000,                       # unclosed
    b"]" * 50 + b"[" * 100,               # closers first
    b'{"raw": ' + b"[" * 5000 + b"1",     # truncated mid-way
    b"[" * 70 + b"]" * 70,                # balanced, too deep
    b'[{"a":[{"b":' * 40 + b"1" + b"}]}]" * 40,  # mixed kinds
])
def test_deep_or_unbalanced_documents_never_reach_the_recursive_parsers(data: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_wire(data)
    assert caught.value.reason in ("too_deep", "bad_json", "wrong_type")
    with pytest.raises(DecodeError):
        decode(data)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = '"' + "[{" * 5000 + '\\" ]]' + '"'
    data = with_raw(b'{"note": ' + text.encode() + b"}")
    assert decode_wire(data).id == event_dict(1)["id"]


def test_many_shallow_brackets_are_fine() -> None:
    data = with_raw(b"[" + b",".join([b'{"a":[1,{"b":2}]}'] * 3000) + b"]")
    assert decode_wire(data).id == event_dict(1)["id"]


def test_depth_check_counts_both_kinds_of_brackets() -> None:
    check_depth(b"[{}]", limit=2)
    with pytest.raises(DecodeError):
        check_depth(b"[{[]}]", limit=2)


# -- other outside bytes -----------------------------------------------------------------------


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "bad_json"),
    (b"\xff\xfe{}", "bad_json"),
    (b'{"id": "\xc3\x28"}', "bad_json"),
    (with_raw(b"NaN"), "bad_json"),
    (with_raw(b"Infinity"), "bad_json"),
    (with_raw(b"9" * 5000), "bad_json"),      # more digits than Python converts
    (with_raw(b"1e999"), "bad_json"),         # beyond a double
    (with_raw(b"-1e400"), "bad_json"),
])
def test_bytes_the_full_decoder_refuses_are_refused_by_the_worker_too(data: bytes, reason: str) -> None:
    # decode_wire keeps raw unparsed; it must still refuse what decode refuses, or the worker
    # would store a record that the identity learner (and every reader) cannot decode.
    with pytest.raises(DecodeError) as full:
        decode(data)
    with pytest.raises(DecodeError) as wire:
        decode_wire(data)
    assert full.value.reason == wire.value.reason == reason


def test_big_but_convertible_numbers_are_stored() -> None:
    data = with_raw(b"[18446744073709551616, 1e300, -0.0, 123456789012345678901234567890]")
    assert decode_wire(data).id == decode(data).id


def test_duplicate_keys_keep_the_last_value_in_both_decoders() -> None:
    data = event_bytes(1)[:-1] + b',"id":"dup-2"}'
    assert decode_wire(data).id == decode(data).id == "dup-2"


def test_oversized_is_checked_before_depth() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_wire(b"[" * 5000, max_bytes=100)
    assert caught.value.reason == "oversized"


# -- per-record isolation in the batch step ----------------------------------------------------


class DLQ:
    def __init__(self) -> None:
        self.sent: list[Rejection] = []

    def __call__(self, rejections: Sequence[Rejection]) -> None:
        self.sent.extend(rejections)


def test_an_unexpected_exception_decoding_one_record_rejects_only_that_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = codec.decode_wire

    def flaky(data: bytes, *, max_bytes: int | None = None) -> Any:
        if b"svc-5" in data:
            raise RecursionError("maximum recursion depth exceeded while deserializing an object")
        return real(data, max_bytes=max_bytes)

    monkeypatch.setattr(ingest, "decode_wire", flaky)
    records = [rec(event_bytes(i), i) for i in range(8)]
    good, bad = split(records, 1 << 20)
    assert [p.position.offset for p in good] == [0, 1, 2, 3, 4, 6, 7]
    assert [(r.record.position.offset, r.error.reason) for r in bad] == [(5, "internal_error")]
    assert "RecursionError: maximum recursion depth" in bad[0].error.message


def test_a_record_the_correlation_chokes_on_goes_to_the_dlq_and_the_rest_is_stored(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real = partition_mod.PartitionCorrelator.correlate

    def choke(self: Any, event: Any, offset: int, out: Any) -> None:
        if offset == 3:
            raise KeyError("boom")
        real(self, event, offset, out)

    monkeypatch.setattr(partition_mod.PartitionCorrelator, "correlate", choke)
    dlq = DLQ()
    correlation = Correlation(None)
    handler = BatchHandler(EventWriter(store), dlq, max_bytes=1 << 20, correlation=correlation)
    result = handler([rec(event_bytes(i), i) for i in range(6)])
    assert result.inserted == 5
    assert [(r.record.position.offset, r.error.reason) for r in dlq.sent] == [(3, "internal_error")]
    assert "KeyError" in dlq.sent[0].error.message
    # The partition moved past it: the state counts the offset as processed.
    assert correlation.correlators[0].next_offset == 6
    stored = store.query(f"SELECT id FROM {store.database}.events ORDER BY id").rows
    assert event_dict(3)["id"] not in {r[0] for r in stored}


def test_a_record_the_identity_learner_chokes_on_goes_to_the_dlq(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def choke(event: Any) -> Any:
        raise ValueError(f"cannot learn from {event.id}")

    monkeypatch.setattr(ingest, "learn", choke)
    dlq = DLQ()
    handler = BatchHandler(EventWriter(store), dlq, max_bytes=1 << 20, correlation=Correlation(None))
    github = orjson.dumps(dict(event_dict(1), source="github://acme/shop"))
    records = [rec(event_bytes(0), 0), rec(github, 1), rec(event_bytes(2), 2)]
    result = handler(records)
    assert result.inserted == 2
    assert [(r.record.position.offset, r.error.reason) for r in dlq.sent] == [(1, "internal_error")]
    assert "ValueError: cannot learn from" in dlq.sent[0].error.message


def test_a_batch_of_every_kind_of_poison_never_raises(store: Store) -> None:
    poison = [b"", b"\xff", b"[" * 100_000, with_raw(nested(10_000)), with_raw(b"9" * 5000),
              with_raw(b"1e999"), b"null", b"[]", b'"x"', b"{}", with_raw(b"NaN"),
              orjson.dumps(dict(event_dict(9), source="github://acme/shop"))[:-1] + b',"raw":1e999}']
    records = [rec(v, i) for i, v in enumerate(poison)] + [rec(event_bytes(100 + i), 100 + i) for i in range(3)]
    dlq = DLQ()
    handler = BatchHandler(EventWriter(store), dlq, max_bytes=1 << 20, correlation=Correlation(None))
    result = handler(records)
    assert result.inserted == 3
    assert len(dlq.sent) == len(poison)
    assert all(r.error.reason != "internal_error" for r in dlq.sent), [r.error.message for r in dlq.sent]


def test_invalid_utf8_inside_raw_is_refused_by_the_worker_too() -> None:
    # Found by the fuzzer: msgspec skips a Raw value without checking its bytes.
    data = with_raw(b'{"su\xffbject": 1}')
    with pytest.raises(DecodeError) as full:
        decode(data)
    with pytest.raises(DecodeError) as wire:
        decode_wire(data)
    assert full.value.reason == wire.value.reason == "bad_json"
