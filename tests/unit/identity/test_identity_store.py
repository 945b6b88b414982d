"""Learned identity joins in the chDB store (pipeline/store/identities.py, 005_identities.sql)."""

from __future__ import annotations

from identity_helpers import join

from pipeline.identity import IdentityConfig
from pipeline.store import Store
from pipeline.store.identities import load_identity_map, read_joins, write_joins

JOINS = [
    join("git:alice@acme.io", "github:alice", event="push-1"),
    join("aws:arn:aws:iam::1:user/alice", "git:alice@acme.io", "claimed", event="ct-1", system="aws"),
    join("okta:bob@acme.io", "okta:00u2bbbbbbbbbbbbbbbb", event="okta-1", system="okta"),
]

CONFIG = IdentityConfig.from_obj({"people": {"alice": {"name": "Alice Ng", "principals": ["github:alice"]}}})


def rows(store: Store) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.identities").rows[0][0])


def test_migration_creates_the_table(store: Store) -> None:
    columns = store.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'identities' ORDER BY position",
        {"db": store.database},
    ).rows
    assert [c[0] for c in columns] == [
        "principal_a",
        "principal_b",
        "strength",
        "system",
        "rule",
        "event_id",
        "learned_at",
    ]


def test_round_trip_and_idempotent_writes(store: Store) -> None:
    assert read_joins(store) == []

    assert write_joins(store, JOINS + JOINS) == len(JOINS)  # repeats in one call are sent once
    write_joins(store, JOINS)  # a replay
    write_joins(store, list(reversed(JOINS)))

    assert read_joins(store) == sorted(JOINS)
    store.command(f"OPTIMIZE TABLE {store.database}.identities FINAL")
    assert rows(store) == len(JOINS)  # merged away physically too
    assert read_joins(store) == sorted(JOINS)


def test_many_evidence_events_read_back_as_one_join_with_the_smallest_event(store: Store) -> None:
    write_joins(store, [join("git:a@x.io", "github:a", event="ev-9")])
    write_joins(
        store, [join("git:a@x.io", "github:a", event="ev-3"), join("git:a@x.io", "github:a", event="ev-5")]
    )

    assert rows(store) == 3  # all evidence is kept
    assert [(j.a, j.b, j.event_id) for j in read_joins(store)] == [("git:a@x.io", "github:a", "ev-3")]


def test_write_nothing(store: Store) -> None:
    assert write_joins(store, []) == 0
    assert rows(store) == 0


def test_load_identity_map_combines_config_and_stored_joins(store: Store) -> None:
    write_joins(store, JOINS)

    imap = load_identity_map(store, CONFIG)

    person = imap.person_of("git:alice@acme.io")
    assert person is not None
    assert (person.id, person.name) == ("alice", "Alice Ng")
    assert [(s.assurance, s.evidence) for s in person.via] == [
        ("asserted-by-github", "push-1"),
        ("configured", "identities.yaml"),
    ]
    aws = imap.person_of("arn:aws:iam::1:user/alice")
    assert aws is not None and aws.id == "alice"
    assert (
        load_identity_map(store, CONFIG, strengths=("asserted",)).person_of("arn:aws:iam::1:user/alice")
        is None
    )
    unnamed = imap.person_of("okta:bob@acme.io")
    assert unnamed is not None and unnamed.id == "okta:00u2bbbbbbbbbbbbbbbb" and not unnamed.configured
