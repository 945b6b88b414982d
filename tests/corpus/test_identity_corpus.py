"""Identity joins learned from the real samples (pipeline/identity/learn.py).

The octokit webhook payloads, the Okta System Log excerpt and the CloudTrail detonation logs are
normalized by their sources and every event goes through :func:`learn`. The expected joins are
what those records really say (PROVENANCE.md): Codertocat's no-reply address in pushes, check
suites and statuses, matfax's no-reply address in workflow runs, the github-actions bot's
commit identity; one Okta user id behind two (redacted) logins; one IAM Identity Center session.
Nothing is learned from display names, from ``noreply@github.com``, from unmatched commit authors
or from the redacted Okta placeholder ids.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from _audit_corpus import OKTA_DIR, STRATUS_DIR, missing
from _sources_corpus import GITHUB_DIR, missing_reason

from pipeline.identity import IdentityConfig, IdentityMap, Join, learn, normalize
from pipeline.model import Event
from pipeline.sources import cloudtrail, github, okta

for _reason in (missing_reason(GITHUB_DIR), missing(OKTA_DIR), missing(STRATUS_DIR)):
    if _reason:
        pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

RECEIVED = datetime(2026, 11, 27, tzinfo=UTC)
CODERTOCAT = "git:21031067+codertocat@users.noreply.github.com"


def github_events() -> list[Event]:
    return [
        ev
        for path in sorted(GITHUB_DIR.glob("*/*.json"))
        for ev in github.to_events(
            json.loads(path.read_text(encoding="utf-8")),
            event_name=path.parent.name,
            scope="corpus",
            received_at=RECEIVED,
        )
    ]


def okta_events() -> list[Event]:
    return [
        ev
        for path in sorted(OKTA_DIR.glob("*.log"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
        for ev in okta.to_events(json.loads(line), scope="corpus")
    ]


def cloudtrail_events() -> list[Event]:
    return [
        ev
        for path in sorted(STRATUS_DIR.glob("*.json"))
        for record in cloudtrail.iter_records(json.loads(path.read_text(encoding="utf-8")))
        for ev in cloudtrail.to_events(record, scope="corpus")
    ]


def joins_of(events: list[Event]) -> list[Join]:
    return sorted({j for ev in events for j in learn(ev)})


def assert_well_formed(joins: list[Join], events: list[Event]) -> None:
    ids = {ev.id for ev in events}
    for j in joins:
        assert j.a < j.b
        assert normalize(j.a) == j.a and normalize(j.b) == j.b, j
        assert j.event_id in ids, j


def test_github_webhooks() -> None:
    events = github_events()
    joins = joins_of(events)
    assert_well_formed(joins, events)

    assert {(j.a, j.b) for j in joins} == {
        (CODERTOCAT, "github:codertocat"),
        ("git:matfax@users.noreply.github.com", "github:matfax"),
        ("git:41898282+github-actions[bot]@users.noreply.github.com", "github:github-actions[bot]"),
    }
    rules = Counter(j.rule for j in joins if j.a == CODERTOCAT)
    # 6 push payloads (pusher), the push commits that carry a username, 2 statuses whose API
    # users GitHub matched (the third has null author/committer), no-reply addresses everywhere
    assert rules["github.pusher"] == 6
    assert rules["github.commit-user"] == 2
    assert rules["github.commit-username"] >= 2
    assert rules["github.noreply-address"] >= 6
    assert {j.assurance for j in joins} == {"asserted-by-github"}
    principals = {p for j in joins for p in (j.a, j.b)}
    # a real address without a GitHub match, and web-flow's shared address: never joined
    assert "git:massimiliano.donini@gmail.com" not in principals
    assert not any(p.partition(":")[2] == "noreply@github.com" for p in principals)
    assert "github:web-flow" not in principals


def test_okta_system_log() -> None:
    events = okta_events()
    joins = joins_of(events)
    assert_well_formed(joins, events)

    assert {(j.a, j.b, j.assurance) for j in joins} == {
        ("okta:00u1abvz4pYqdM8ms4x6", "okta:username@elastic.co", "asserted-by-okta"),
        ("okta:00u1abvz4pYqdM8ms4x6", "okta:xxxxxx@elastic.co", "asserted-by-okta"),
    }
    # The excerpt's placeholder ids ("id", "user_id", "randomidhere") would merge strangers
    # (user@domain.com and name@domain.com both have id "id"): none is joined.
    imap = IdentityMap.build(None, joins)
    assert imap.person_of("okta:user@domain.com") is None
    assert imap.person_of("okta:name@domain.com") is None
    one = imap.person_of("okta:username@elastic.co")
    assert one is not None
    assert one.principals == (
        "okta:00u1abvz4pYqdM8ms4x6",
        "okta:username@elastic.co",
        "okta:xxxxxx@elastic.co",
    )


def test_cloudtrail_detonation_logs() -> None:
    events = cloudtrail_events()
    joins = joins_of(events)
    assert_well_formed(joins, events)

    # No record sets a sourceIdentity; the only reliable join is the Identity Center session,
    # named after its user by AWS (the record's ARN and principalId are redacted differently).
    assert {(j.a, j.b, j.rule, j.assurance) for j in joins} == {
        (
            "aws-sso:randomca0l529zwnay@gmail.com",
            "aws:arn:aws:sts::844015365555:assumed-role/AWSReservedSSOrandoml3I7nL6f7BmB@gmail.com",
            "aws.sso-user",
            "asserted-by-aws",
        )
    }
    # IAM users calling AssumeRole (christophe) or GetFederationToken learn nothing: no source identity
    assert not any("user/christophe" in p for j in joins for p in (j.a, j.b))


def test_identity_map_over_all_samples_resolves_people() -> None:
    events = github_events() + okta_events() + cloudtrail_events()
    joins = joins_of(events)
    config = IdentityConfig.from_obj(
        {"people": {"codertocat": {"name": "Coder Tocat", "principals": ["github:Codertocat"]}}},
        "identities.yaml",
    )
    imap = IdentityMap.build(config, joins)

    person = imap.person_of(CODERTOCAT)
    assert person is not None
    assert (person.id, person.name) == ("codertocat", "Coder Tocat")
    assert [s.assurance for s in person.via] == ["asserted-by-github", "configured"]
    # every GitHub event's sender resolves, and only Codertocat's events resolve to codertocat
    resolved = Counter(
        p.id
        for ev in events
        if ev.source.startswith("github://") and (p := imap.person_of(ev.actor)) is not None
    )
    assert resolved["codertocat"] == sum(
        1 for ev in events if ev.source.startswith("github://") and ev.actor.id.lower() == "github:codertocat"
    )
    assert imap.conflicts == ()

    shuffled = list(joins)
    random.Random(7).shuffle(shuffled)
    again = IdentityMap.build(config, shuffled)
    assert again.people() == imap.people()
    assert again.joins == imap.joins
