"""The identity map: config + learned joins, lookups and their explanation (pipeline/identity/resolve.py)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from identity_helpers import join

from pipeline.identity import IdentityConfig, IdentityMap, Join, annotate
from pipeline.model import Actor

CONFIG = IdentityConfig.from_obj(
    {
        "people": {
            "alice": {
                "name": "Alice Ng",
                "principals": ["github:alice", "okta:alice@acme.io", "postgres:alice"],
            },
            "bob": {"name": "Bob Li", "principals": ["github:bob"]},
        }
    },
    "identities.yaml",
)


def test_configured_principal_is_its_person() -> None:
    imap = IdentityMap.build(CONFIG)

    person = imap.person_of("GitHub:Alice")
    assert person is not None
    assert (person.id, person.name, person.configured) == ("alice", "Alice Ng", True)
    assert person.principals == ("github:alice", "okta:alice@acme.io", "postgres:alice")
    assert [(s.principal, s.to, s.assurance, s.evidence) for s in person.via] == [
        ("github:alice", "alice", "configured", "identities.yaml")
    ]
    assert person.assurance == "configured"
    assert imap.person_of("github:carol") is None
    assert imap.person_of("not a principal") is None


def test_learned_join_attaches_to_configured_person_and_explains_the_path() -> None:
    imap = IdentityMap.build(
        CONFIG,
        [
            join("git:alice@acme.io", "github:alice", event="push1"),
            join(
                "aws:arn:aws:iam::1:user/alice",
                "aws:source-identity:al",
                "claimed",
                event="ct1",
                system="aws",
            ),
            join("git:alice@acme.io", "aws:source-identity:al", "claimed", event="ct2", system="aws"),
        ],
    )

    person = imap.person_of("aws:arn:aws:iam::1:user/alice")
    assert person is not None and person.id == "alice"
    assert [(s.principal, s.to, s.assurance, s.evidence) for s in person.via] == [
        ("aws:arn:aws:iam::1:user/alice", "aws:source-identity:al", "claimed", "ct1"),
        ("aws:source-identity:al", "git:alice@acme.io", "claimed", "ct2"),
        ("git:alice@acme.io", "github:alice", "asserted-by-github", "push1"),
        ("github:alice", "alice", "configured", "identities.yaml"),
    ]
    assert person.assurance == "claimed"  # the weakest step
    assert person.via_text().startswith("aws:arn:aws:iam::1:user/alice -[claimed]-> aws:source-identity:al")
    assert "git:alice@acme.io" in person.principals


def test_asserted_path_is_preferred_over_a_shorter_claimed_one() -> None:
    imap = IdentityMap.build(
        CONFIG,
        [
            join("git:a@acme.io", "github:alice", "claimed", event="c"),
            join("git:a@acme.io", "okta:00u1abvz4pYqdM8ms4x6", event="o1", system="okta"),
            join("okta:00u1abvz4pYqdM8ms4x6", "okta:alice@acme.io", event="o2", system="okta"),
        ],
    )
    person = imap.person_of("git:a@acme.io")
    assert person is not None
    assert [s.assurance for s in person.via] == ["asserted-by-okta", "asserted-by-okta", "configured"]


def test_join_between_two_configured_people_is_refused() -> None:
    bridge = join("git:shared@acme.io", "github:bob", event="e2")
    imap = IdentityMap.build(CONFIG, [join("git:shared@acme.io", "github:alice", event="e1"), bridge])

    alice, bob = imap.person_of("github:alice"), imap.person_of("github:bob")
    assert alice is not None and bob is not None
    assert alice.id == "alice" and bob.id == "bob"
    # The first join in canonical order wins the unowned principal; the second is refused.
    shared = imap.person_of("git:shared@acme.io")
    assert shared is not None and shared.id == "alice"
    assert [(c.join, c.people) for c in imap.conflicts] == [(bridge, ("alice", "bob"))]
    assert bridge not in imap.joins


def test_stronger_join_wins_a_contested_principal_whatever_the_order() -> None:
    weak = join("git:x@acme.io", "github:alice", "claimed", event="a")
    strong = join("git:x@acme.io", "github:bob", "asserted", event="z")
    for order in ([weak, strong], [strong, weak]):
        person = IdentityMap.build(CONFIG, order).person_of("git:x@acme.io")
        assert person is not None and person.id == "bob"


def test_unnamed_person_gets_the_smallest_principal_as_id() -> None:
    imap = IdentityMap.build(
        None,
        [
            join("okta:carol@acme.io", "okta:00u3cccccccccccccccc", system="okta"),
            join("git:carol@acme.io", "github:carol"),
        ],
    )
    carol = imap.person_of("okta:Carol@Acme.io")
    assert carol is not None
    assert (carol.id, carol.name, carol.configured) == ("okta:00u3cccccccccccccccc",) * 2 + (False,)
    assert carol.principals == ("okta:00u3cccccccccccccccc", "okta:carol@acme.io")
    assert [s.to for s in carol.via] == ["okta:00u3cccccccccccccccc"]
    own = imap.person_of("okta:00u3cccccccccccccccc")
    assert own is not None and own.via == () and own.assurance == "self"
    # separate component, never merged with the first (no join between them)
    git_carol = imap.person_of("git:carol@acme.io")
    assert git_carol is not None and git_carol.id == "git:carol@acme.io"
    assert [p.id for p in imap.people()] == ["git:carol@acme.io", "okta:00u3cccccccccccccccc"]


def test_strength_filter_leaves_out_claimed_joins() -> None:
    joins = [join("aws:arn:aws:iam::1:user/al", "github:alice", "claimed", system="aws")]
    assert IdentityMap.build(CONFIG, joins).person_of("aws:arn:aws:iam::1:user/al") is not None
    assert (
        IdentityMap.build(CONFIG, joins, strengths=("asserted",)).person_of("aws:arn:aws:iam::1:user/al")
        is None
    )


def test_actor_lookup_follows_principal_order() -> None:
    imap = IdentityMap.build(CONFIG)
    impersonating = Actor(id="k8s:bob", principal="k8s:alice", kind="human", assurance="authenticated")
    config = IdentityConfig.from_obj(
        {"people": {"alice": {"principals": ["k8s:alice"]}, "bob": {"principals": ["k8s:bob"]}}}
    )
    person = IdentityMap.build(config).person_of(impersonating)
    assert person is not None and person.id == "alice"  # the authenticated user, not the impersonated one
    pg = Actor(id="postgres:pg1:alice", principal="alice", kind="unknown", assurance="authenticated")
    person = imap.person_of(pg)
    assert person is not None and person.id == "alice"
    assert person.via[0].principal == "postgres:alice"  # matched by the any-server spelling


def test_annotate_adds_the_person_to_query_rows() -> None:
    imap = IdentityMap.build(CONFIG, [join("git:alice@acme.io", "github:alice", event="push1")])
    row = {"time": "t", "actor_id": "git:alice@acme.io", "actor_assurance": "claimed", "id": "e"}

    out = annotate(row, imap)

    assert out is not row and "person" not in row
    assert out["person"] == {
        "id": "alice",
        "name": "Alice Ng",
        "assurance": "asserted-by-github",
        "via": [
            {
                "from": "git:alice@acme.io",
                "to": "github:alice",
                "assurance": "asserted-by-github",
                "evidence": "push1",
                "rule": "test.rule",
            },
            {
                "from": "github:alice",
                "to": "alice",
                "assurance": "configured",
                "evidence": "identities.yaml",
                "rule": "identities.yaml",
            },
        ],
    }
    impersonated = annotate(
        {"actor_id": "k8s:root", "actor_principal": "k8s:bob"},
        IdentityMap.build(IdentityConfig.from_obj({"people": {"bob": {"principals": ["k8s:bob"]}}})),
    )
    assert impersonated["person"]["id"] == "bob"
    assert annotate({"actor_id": "github:nobody"}, imap)["person"] is None
    assert annotate({"time": "t"}, imap)["person"] is None


# -- determinism -------------------------------------------------------------------------------

POOL = [
    "github:alice",
    "github:bob",
    "github:carol",
    "git:a@x.io",
    "git:b@x.io",
    "git:c@x.io",
    "okta:a@x.io",
    "okta:b@x.io",
    "aws:source-identity:a",
    "aws:arn:aws:iam::1:user/a",
    "k8s:a",
    "k8s:b",
]


def snapshot(imap: IdentityMap) -> object:
    return (
        [(p.id, p.name, p.principals, p.configured) for p in imap.people()],
        {q: imap.person_of(q) for q in POOL},
        sorted((c.join, c.people) for c in imap.conflicts),
    )


joins_strategy = st.lists(
    st.builds(
        lambda pair, strength, event: join(pair[0], pair[1], strength, event=event),
        st.lists(st.sampled_from(POOL), min_size=2, max_size=2, unique=True),
        st.sampled_from(["asserted", "claimed"]),
        st.sampled_from(["e1", "e2", "e3"]),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(joins=joins_strategy, seed=st.integers(0, 2**32 - 1))
def test_map_is_the_same_for_any_join_order(joins: list[Join], seed: int) -> None:
    config = IdentityConfig.from_obj(
        {
            "people": {
                "alice": {"principals": ["github:alice", "okta:a@x.io"]},
                "bob": {"principals": ["github:bob"]},
            }
        }
    )
    shuffled = list(joins) + joins[: len(joins) // 2]  # with repeats, too
    random.Random(seed).shuffle(shuffled)

    first, second = IdentityMap.build(config, joins), IdentityMap.build(config, shuffled)

    assert snapshot(first) == snapshot(second)
    # configuration stays authoritative: no join ever moves a configured principal
    for pid, declared in config.people.items():
        for principal in declared.principals:
            person = first.person_of(principal)
            assert person is not None and person.id == pid
    # every explanation is a real chain: consecutive steps meet, and each learned step is a join
    accepted = {(j.a, j.b) for j in first.joins}
    for q in POOL:
        person = first.person_of(q)
        if person is None:
            continue
        assert person.via == () or person.via[0].principal == q
        for before, after in zip(person.via, person.via[1:], strict=False):
            assert before.to == after.principal
        for step in person.via:
            if step.assurance != "configured":
                assert tuple(sorted((step.principal, step.to))) in accepted
