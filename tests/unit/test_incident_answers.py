"""`why`, `who` and `timeline` on the embedded store with realistic shapes (issue 13): names as
real sources write them, volume of routine reads, the person behind a role session."""

from __future__ import annotations

from datetime import timedelta

import pytest
from incident_data import AT, DB, FRIDA, TRAIL, busy_database, env, frida_chain, outage, write

from pipeline.correlate.topology import Topology
from pipeline.identity import IdentityConfig, IdentityMap
from pipeline.store import Store, queries


def test_config_change_first_routine_reads_grouped_failure_is_the_symptom(store: Store) -> None:
    write(store, outage())
    topo = Topology.from_obj({"depends_on": {"payments-api": ["payments-db"]}})
    answer = queries.why(store, "payments-db", at=AT, window=timedelta(hours=6), topology=topo)
    kinds = [(c["event"]["type"], c["count"]) for c in answer["causes"]]
    assert kinds[:2] == [("config.changed", 1), ("deploy.created", 1)]
    assert sorted(kinds[2:]) == [("db.query", 5), ("db.query", 15)]
    top = answer["causes"][0]
    assert top["event"]["diff"]["after"] == {"max_connections": 20} and top["kind"] == "config"
    reads = next(c for c in answer["causes"] if c["count"] == 15)
    assert (reads["first"], reads["last"]) == (AT - timedelta(minutes=50), AT - timedelta(minutes=22))
    assert reads["event"]["statement"] == "SELECT * FROM orders WHERE id = $1"
    assert [s["event"]["type"] for s in answer["symptoms"]] == ["db.failed"]
    assert answer["candidates"] == 23
    assert answer["matches"] == [{"kind": "database", "id": "database/payments-db", "name": "payments-db",
                                  "service": "payments", "how": "target.name", "events": 22}]


@pytest.mark.parametrize(("typed", "how"), [
    ("database/payments-db", "target.id"), ("payments-db", "target.name"), ("database:payments-db", "kind:name"),
    ("payments", "target.service"),
])
def test_why_resolves_every_form_of_a_name(store: Store, typed: str, how: str) -> None:
    write(store, outage())
    answer = queries.why(store, typed, at=AT, window=timedelta(hours=6))
    assert [m["how"] for m in answer["matches"]] == [how]
    assert answer["causes"][0]["event"]["type"] == "config.changed"


def test_an_arn_is_found_by_its_last_segment_in_why_timeline_and_resolve(store: Store) -> None:
    write(store, [env(1, 10, "config.audit.disabled", TRAIL, action="StopLogging")])
    name = "stratus-red-team-ct-stop-trail-buykxbqejv"
    answer = queries.why(store, name, at=AT, window=timedelta(hours=1))
    assert [c["event"]["action"] for c in answer["causes"]] == ["StopLogging"]
    assert answer["matches"][0]["how"] == "last segment"
    assert [r[1] for r in queries.timeline(store, target=name).rows] == ["config.audit.disabled"]
    assert [r[1] for r in queries.timeline(store, target=f"cloudtrail.trail:{name}").rows] == ["config.audit.disabled"]
    assert queries.timeline(store, target="stratus").rows == []


def test_several_targets_with_one_name_are_listed_with_how_they_matched(store: Store) -> None:
    write(store, [env(1, 10, "config.changed", DB), env(2, 9, "deploy.updated", {"kind": "k8s.deployment",
                  "id": "prod/payments-db"}), env(3, 8, "deploy.updated", {"kind": "k8s.deployment",
                  "id": "prod/payments-db"})])
    found = queries.why(store, "payments-db", at=AT, window=timedelta(hours=1))["matches"]
    assert [(m["id"], m["how"], m["events"]) for m in found] == [
        ("database/payments-db", "target.name", 1), ("prod/payments-db", "last segment", 2)]
    assert len(queries.timeline(store, target="payments-db").rows) == 3


def test_why_names_the_person_behind_a_role_session(store: Store) -> None:
    write(store, frida_chain())
    answer = queries.why(store, "payments-exports", at=AT, window=timedelta(hours=1), identities=FRIDA)
    delete = answer["causes"][0]["event"]
    assert delete["action"] == "DeleteBucket" and delete["actor_id"] == "prod-admin/ops-session"
    assert delete["person"]["id"] == "frida"
    origin = delete["session_origin"]
    assert origin["actor"] == "arn:aws:iam::111122223333:user/frida" and origin["assurance"] == "mfa"
    assert origin["text"] == "frida (mfa at 2026-11-27 01:55 via AssumeRole, AssumeRole)"


def test_who_a_person_finds_what_was_done_with_their_sessions(store: Store) -> None:
    write(store, frida_chain())
    result = queries.who(store, "frida", identities=FRIDA)
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    assert [(r["action"], r["actor_id"]) for r in rows] == [
        ("AssumeRole", "arn:aws:iam::111122223333:user/frida"), ("AssumeRole", "ops/frida"),
        ("DeleteBucket", "prod-admin/ops-session")]
    assert rows[2]["via"] == "frida (mfa at 2026-11-27 01:55 via AssumeRole, AssumeRole)"
    # Bounded in time, the session opened before `since` still counts.
    late = queries.who(store, "frida", since=AT - timedelta(minutes=12), identities=FRIDA).rows
    assert [r[2] for r in late] == ["DeleteBucket"]


def test_who_fills_its_limit_after_dropping_someone_elses_rows(store: Store) -> None:
    # "alice" is frida's GitHub login and also someone else's PostgreSQL role: rows of the other
    # alice come first in time and are dropped; the limit still returns frida's events.
    imap = IdentityMap.build(IdentityConfig.from_obj({"people": {
        "frida": {"principals": ["github:alice", "arn:aws:iam::111122223333:user/frida"]},
        "other": {"principals": ["postgres:db:alice"]}}}))
    other = [env(i, 50 - i, "db.query", DB, actor="alice", principal="postgres:db:alice", statement="SELECT 1")
             for i in range(5)]
    mine = [env(10 + i, 20 - i, "change.opened", {"kind": "repo", "id": "acme/api"}, actor="github:alice")
            for i in range(3)]
    write(store, other + mine)
    rows = queries.who(store, "frida", limit=2, identities=imap).rows
    assert [r[9] for r in rows] == ["ev-0010", "ev-0011"]


def test_config_change_and_deploy_stay_on_top_of_a_busy_database(store: Store) -> None:
    """The bench's realistic mix at a small size: 90 % reads do not bury the two changes."""
    events = busy_database(3000, AT)
    assert sum(e["type"] == "db.query" for e in events) / len(events) >= 0.85
    write(store, events)
    topo = Topology.from_obj({"depends_on": {"payments-api": ["database/payments-db"]}})
    answer = queries.why(store, "payments-db", at=AT, window=timedelta(hours=6), topology=topo)
    assert answer["candidates"] == 3000
    top3 = [c["event"]["type"] for c in answer["causes"][:3]]
    assert top3[:2] == ["config.changed", "deploy.created"]
    assert len(answer["causes"]) <= 20 and answer["symptoms"][0]["event"]["type"] == "db.failed"
    # Writes (same statement, same role) come next, folded into lines; reads rank below them.
    assert {c["kind"] for c in answer["causes"][2:]} == {"write"}
    assert sum(c["count"] for c in answer["causes"]) > len(answer["causes"])


def test_a_late_session_start_counts_as_soon_as_it_is_stored(store: Store) -> None:
    first, second, delete = frida_chain()
    write(store, [delete])
    assert [r[2] for r in queries.who(store, "frida", identities=FRIDA).rows] == []
    write(store, [second, first])  # the role assumptions arrive late, in any order
    assert [r[2] for r in queries.who(store, "frida", identities=FRIDA).rows] == [
        "AssumeRole", "AssumeRole", "DeleteBucket"]
    assert store.query(f"SELECT count() FROM {store.database}.session_issuers").rows[0][0] == 2


def test_who_follows_a_session_of_another_system_opened_by_the_person(store: Store) -> None:
    app = {"kind": "okta.app", "id": "0oa1payments"}
    imap = IdentityMap.build(IdentityConfig.from_obj({"people": {"frida": {"principals": ["okta:frida@acme.io"]}}}))
    write(store, [
        env(1, 30, "iam.login", app, actor="okta:frida@acme.io", assurance="mfa", action="user.session.start",
            links=("session:okta:102xyz",)),
        env(2, 20, "access.app.user_assigned", app, actor="okta-admin-console", action="assign",
            links=("session:okta:102xyz",)),
        env(3, 10, "access.app.user_assigned", app, actor="okta-admin-console", action="assign",
            links=("session:okta:999other",)),
    ])
    result = queries.who(store, "frida", identities=imap)
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    assert [(r["id"], r["via"]) for r in rows] == [
        ("ev-0001", ""), ("ev-0002", "frida (mfa at 2026-11-27 01:44 via user.session.start)")]
