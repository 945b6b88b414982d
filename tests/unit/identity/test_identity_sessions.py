"""Identity through sessions (pipeline.identity.sessions): who opened the session an event used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.identity.sessions import SessionIndex, session_origin, stronger

T0 = datetime(2026, 11, 27, 1, 55, tzinfo=UTC)


def ev(i: str, minutes: float, actor: str, assurance: str, links: tuple[str, ...] = (), issued: str | None = None,
       action: str = "") -> dict[str, Any]:
    return {"id": i, "time": T0 + timedelta(minutes=minutes), "type": "t", "action": action, "actor_id": actor,
            "actor_assurance": assurance, "links": list(links),
            "diff": {"session_issued": {"session": issued}} if issued else None}


def test_an_aws_role_chain_leads_back_to_the_user_with_the_mfa_proven_at_the_start() -> None:
    evs = [ev("a1", 0, "user/frida", "mfa", ("session:aws:K1",), "session:aws:K1", "AssumeRole"),
           ev("a2", 4, "ops/frida", "authenticated", ("session:aws:K1", "session:aws:K2"), "session:aws:K2",
              "AssumeRole"),
           ev("del", 9, "prod-admin/ops-session", "authenticated", ("session:aws:K2",), action="DeleteBucket")]
    for order in (evs, list(reversed(evs))):
        origin = session_origin(evs[2], order)
        assert origin is not None
        assert [s.event for s in origin.steps] == ["del", "a2", "a1"]
        assert origin.origin.actor == "user/frida" and origin.assurance == "mfa"
        assert origin.text("frida") == "frida (mfa at 2026-11-27 01:55 via AssumeRole, AssumeRole)"
    # The event that opened the first session used the user's own credentials.
    assert session_origin(evs[0], evs) is None


def test_a_missing_issuer_stops_the_walk_where_the_data_ends() -> None:
    evs = [ev("a2", 4, "ops/frida", "authenticated", ("session:aws:K1", "session:aws:K2"), "session:aws:K2"),
           ev("del", 9, "prod-admin/ops-session", "authenticated", ("session:aws:K2",))]
    origin = session_origin(evs[1], evs)
    assert origin is not None and origin.origin.actor == "ops/frida" and origin.assurance == "authenticated"


def test_okta_and_postgres_sessions_inherit_from_the_event_that_opened_them() -> None:
    evs = [ev("login", 0, "okta:frida@acme.io", "mfa", ("session:okta:102abc",), action="user.session.start"),
           ev("change", 5, "okta-admin-app", "authenticated", ("session:okta:102abc",)),
           ev("start", 1, "postgres:db:gateway", "authenticated", ("session:postgres:db:s1",)),
           ev("q", 2, "postgres:db:gateway", "authenticated", ("session:postgres:db:s1",))]
    index = SessionIndex(evs)
    origin = index.origin(evs[1])
    assert origin is not None and origin.origin.event == "login" and origin.assurance == "mfa"
    # The same actor all along: the origin is found, the caller decides it adds nothing.
    same = index.origin(evs[3])
    assert same is not None and same.origin.actor == "postgres:db:gateway"


def test_cycles_end_and_assurance_order() -> None:
    evs = [ev("x", 0, "a", "mfa", ("session:aws:K1", "session:aws:K2"), "session:aws:K2"),
           ev("y", 1, "b", "claimed", ("session:aws:K2", "session:aws:K1"), "session:aws:K1")]
    assert session_origin(evs[0], evs) is not None  # terminates
    assert stronger("mfa", "authenticated") == "mfa" and stronger("claimed", "signed") == "signed"
    assert stronger("weird", "none") == "weird"
