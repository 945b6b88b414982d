"""What the worker emits to ``<prefix>.chains``: one record per event the store keeps from that very
record (duplicates from elsewhere are not emitted, a replay of the same positions is), keyed by
scope, per input partition in offset order, with the worker's chain id and the person."""

from __future__ import annotations

from collections.abc import Sequence

from factories import event_bytes, event_dict

from pipeline.identity import IdentityConfig, make_join
from pipeline.model import decode_dict, encode
from pipeline.rules.engine import decode_item
from pipeline.store import EventWriter, Position, Store
from pipeline.stream.correlation import Correlation
from pipeline.stream.ingest import BatchHandler, Record, Rejection
from pipeline.stream.people import People

TOPIC = "causelog.changes"


def rec(value: bytes, offset: int, partition: int = 0) -> Record:
    return Record(value, Position(TOPIC, partition, offset))


def no_dlq(rejections: Sequence[Rejection]) -> None:
    assert not rejections


def handler(store: Store, people: People | None = None) -> BatchHandler:
    return BatchHandler(EventWriter(store), no_dlq, max_bytes=1 << 20, correlation=Correlation(None), people=people)


def test_each_kept_event_is_emitted_once_with_its_chain_and_scope(store: Store) -> None:
    h = handler(store)
    batch = [rec(event_bytes(i), i) for i in range(20)] + [rec(event_bytes(3), 20)]  # 3 again, in the batch
    result = h(batch)
    assert result.inserted == 20 and result.duplicates == 1
    (part,) = result.chains
    items = [(k, decode_item(v)) for k, v in result.chains[part]]
    assert [i.event["id"] for _, i in items] == [event_dict(i)["id"] for i in range(20)]  # offset order
    assert {k for k, _ in items} == {b"acme"}
    stored = dict(store.query(f"SELECT id, chain_id FROM {store.database}.events").rows)
    assert {i.event["id"]: i.chain_id for _, i in items} == stored
    assert all(i.chain_id for _, i in items)
    # The envelope is spliced as received, not re-encoded.
    assert result.chains[part][0][1].startswith(b'{"event":' + event_bytes(0) + b",")


def test_an_event_stored_from_elsewhere_is_not_emitted_but_a_replayed_position_is(store: Store) -> None:
    first = handler(store)
    batch = [rec(event_bytes(i), i, partition=1) for i in range(5)]
    emitted = first(batch).chains[1]
    # A crash before the checkpoint: a new worker re-reads the same positions (nothing of the
    # first attempt's chains records was committed), so they are emitted again, identically.
    again = handler(store)(batch)
    assert again.inserted == 0 and again.chains[1] == emitted
    # The same events produced again (new offsets): duplicates, not emitted.
    dup = handler(store)([rec(event_bytes(i), 100 + i, partition=1) for i in range(5)])
    assert dup.duplicates == 5 and dup.chains == {}


def test_partitions_are_kept_apart_and_merges_are_named(store: Store) -> None:
    a = dict(event_dict(1), id="a", links=["commit:" + "a" * 40])
    b = dict(event_dict(2), id="b", links=["commit:" + "b" * 40])
    ab = dict(event_dict(3), id="ab", links=["commit:" + "a" * 40, "commit:" + "b" * 40])
    other = dict(event_dict(4), id="o", scope="beta")
    env = [encode(decode_dict(d)) for d in (a, b, ab, other)]  # type: ignore[arg-type]
    result = handler(store)([rec(env[0], 0), rec(env[1], 1), rec(env[2], 2), rec(env[3], 0, partition=3)])
    items = {p: [decode_item(v) for _, v in recs] for p, recs in result.chains.items()}
    assert [i.event["id"] for i in items[0]] == ["a", "b", "ab"]
    assert [k for k, _ in result.chains[3]] == [b"beta"]
    merging = items[0][2]
    assert merging.merged and set(merging.merged) | {merging.chain_id} == {items[0][0].chain_id, items[0][1].chain_id}


def test_person_comes_from_declared_people_and_joins_learned_on_the_way() -> None:
    config = IdentityConfig.from_obj({"people": {"erin": {"principals": ["github:erin"]}}})
    people = People(config)
    assert people.person("github:erin") == "erin"
    assert people.person("git:erin@acme.io") is None
    join = make_join("github:erin", "git:erin@acme.io", strength="asserted", system="github", rule="commit",
                     event_id="e1")
    assert join is not None
    people.learn([join])
    assert people.person("git:erin@acme.io") == "erin"
    # Two principals joined by data only: an unnamed person, named by its smallest principal.
    other = make_join("github:zed", "git:zed@acme.io", strength="asserted", system="github", rule="commit",
                      event_id="e2")
    assert other is not None
    people.learn([other])
    assert people.person("github:zed") == "git:zed@acme.io"
    assert people.person("github:nobody") is None


def test_the_person_is_on_the_record(store: Store) -> None:
    config = IdentityConfig.from_obj({"people": {"erin": {"principals": ["github:erin"]}}})
    d = dict(event_dict(1), actor={"id": "github:erin", "kind": "human", "assurance": "mfa"})
    result = handler(store, People(config))([rec(encode(decode_dict(d)), 0)])  # type: ignore[arg-type]
    (item,) = [decode_item(v) for _, v in result.chains[0]]
    assert item.person == "erin"


def test_chains_topic_has_the_partitions_of_changes_and_room_for_a_whole_envelope() -> None:
    from pipeline.bus.kafka import TOPIC_MAX_MESSAGE_BYTES, topic_specs
    from pipeline.settings import load

    s = load({"CAUSELOG_PARTITIONS": "4"})
    specs = {t.name: t for t in topic_specs(s, changes_partitions=7)}
    assert specs[s.topic_chains].partitions == specs[s.topic_changes].partitions == 7
    assert int(specs[s.topic_chains].config["max.message.bytes"]) > TOPIC_MAX_MESSAGE_BYTES
