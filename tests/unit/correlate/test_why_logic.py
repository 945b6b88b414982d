"""Pure parts of `why`: the topology, target names, the ranking of candidate causes, stories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.correlate import ranking
from pipeline.correlate.explain import story
from pipeline.correlate.targets import how_matched, matches, target_forms
from pipeline.correlate.topology import Topology, load_topology, names
from pipeline.errors import ConfigError

AT = datetime(2026, 11, 27, 2, 14, tzinfo=UTC)
TOPO = Topology.from_obj({"depends_on": {"web": ["api"], "api": ["orders-db", "cache"], "cache": ["redis"],
                                         "batch": ["orders-db"]}})


def test_related_is_self_transitive_dependencies_and_direct_dependents() -> None:
    assert TOPO.related("api") == {"api", "orders-db", "cache", "redis", "web"}
    assert TOPO.related("orders-db") == {"orders-db", "api", "batch"}
    assert TOPO.related("unknown") == {"unknown"}


def test_cycles_terminate() -> None:
    t = Topology.from_obj({"depends_on": {"a": ["b"], "b": ["a"]}})
    assert t.dependencies("a") == {"b"} and t.related("a") == {"a", "b"}


@pytest.mark.parametrize("obj", [[1], {"edges": {}}, {"depends_on": ["a"]}, {"depends_on": {"a": [1]}}],
                         ids=["list", "unknown-key", "deps-list", "non-string"])
def test_bad_topology_is_a_config_error(obj: object) -> None:
    with pytest.raises(ConfigError, match="topology"):
        Topology.from_obj(obj)


def test_load_topology_missing_file_is_empty_and_bad_yaml_is_reported(tmp_path: Path) -> None:
    assert load_topology(tmp_path / "none.yaml").related("x") == {"x"}
    bad = tmp_path / "t.yaml"
    bad.write_text("depends_on: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_topology(bad)


def ev(i: str, minutes_before: float, type_: str, outcome: str = "success", links: tuple[str, ...] = ()) -> dict:
    return {"id": i, "time": AT - timedelta(minutes=minutes_before), "type": type_, "outcome": outcome,
            "actor_id": f"user-{i}", "actor_assurance": "claimed", "links": list(links)}


def q(i: int, minutes_before: float, statement: str, actor: str = "app", session: str = "s1") -> dict:
    return {**ev(f"q{i:03d}", minutes_before, "db.query", links=(f"session:postgres:db:{session}",)),
            "actor_id": actor, "action": "SELECT", "statement": statement, "target_id": "database/payments-db"}


def test_twenty_routine_queries_do_not_bury_the_config_change() -> None:
    """The issue's scenario: 20 SELECTs in the window, max_connections cut 200 -> 20 at 01:29."""
    reads = [q(i, 60 - i * 3, "SELECT * FROM orders WHERE id = $1") for i in range(20)]
    config = {**ev("cfg", 45, "config.changed"), "diff": {"before": {"max_connections": 200},
                                                         "after": {"max_connections": 20}}}
    ranked = ranking.rank([*reads, config], at=AT, window_seconds=6 * 3600)
    assert ranked.causes[0].event["id"] == "cfg"
    assert [(c.count, c.first, c.last) for c in ranked.causes[1:]] == [
        (20, AT - timedelta(minutes=60), AT - timedelta(minutes=3))]
    assert ranked.causes[1].event["id"] == "q019" and ranked.candidates == 21


def test_kinds_rank_config_deploy_schema_access_write_read() -> None:
    evs = [ev("read", 1, "db.query"), ev("write", 2, "db.write"), ev("access", 3, "iam.policy.attached"),
           ev("schema", 4, "db.ddl"), ev("deploy", 5, "deploy.created"), ev("config", 350, "config.changed"),
           ev("other", 1, "git.commit")]
    ranked = ranking.rank(evs, at=AT, window_seconds=6 * 3600)
    assert [c.event["id"] for c in ranked.causes] == ["config", "deploy", "schema", "access", "write", "other", "read"]
    assert ranked.causes[0].reasons[0] == "config change +100"


@pytest.mark.parametrize(("type_", "statement", "kind"), [
    ("db.query", "SELECT 1", "read"), ("db.query", "WITH x AS (SELECT 1) SELECT * FROM x", "read"),
    ("db.query", "UPDATE t SET a = $1", "write"), ("db.query", "ALTER TABLE t ADD c int", "schema"),
    ("db.query", "GRANT SELECT ON t TO bob", "access"), ("db.query", "ALTER ROLE bob SUPERUSER", "access"),
    ("aws.s3.delete_bucket", None, "write"), ("aws.s3.get_object.read", None, "read"),
    ("iam.role.assumed", None, "other"), ("iam.user.created", None, "access"), ("iam.mfa.verified", None, "other"),
    ("config.audit.disabled", None, "config"), ("terraform.resource.update", None, "config"),
    ("deploy.updated", None, "deploy"), ("data.changed", None, "write"), ("ci.run.success", None, "other"),
])
def test_kind_of(type_: str, statement: str | None, kind: str) -> None:
    assert ranking.kind_of(type_, "", statement) == kind


def test_failed_changes_move_up_and_failures_that_are_no_change_are_symptoms() -> None:
    evs = [ev("deploy-ok", 5, "deploy.created"), ev("config-failed", 5, "config.changed", "failure"),
           ev("write-failed", 5, "db.write", "failure"), ev("access", 5, "iam.policy.attached"),
           ev("down", 0, "db.failed", "failure"), ev("slow", 3, "db.query", "failure")]
    ranked = ranking.rank(evs, at=AT, window_seconds=6 * 3600)
    assert [c.event["id"] for c in ranked.causes] == ["config-failed", "deploy-ok", "access", "write-failed"]
    assert [s.event["id"] for s in ranked.symptoms] == ["down", "slow"]


def test_changes_with_a_diff_and_deploys_are_never_grouped_but_same_statements_are() -> None:
    evs = [{**ev(f"c{i}", 10 + i, "config.changed"), "diff": {"n": i}} for i in range(3)]
    evs += [ev(f"d{i}", 10 + i, "deploy.created") for i in range(2)]
    evs += [q(i, 5 + i, "SELECT 1", actor="a") for i in range(3)] + [q(9, 5, "SELECT 1", actor="b")]
    evs += [q(10 + i, 5 + i, "SELECT 2", actor="a") for i in range(2)]
    ranked = ranking.rank(evs, at=AT, window_seconds=3600, limit=100)
    assert sorted(c.count for c in ranked.causes) == [1, 1, 1, 1, 1, 1, 2, 3]


def test_grouping_does_not_depend_on_input_order() -> None:
    evs = [q(i, 30 - i, "SELECT 1", session=f"s{i % 2}") for i in range(10)] + [ev("cfg", 20, "config.changed")]
    a = ranking.rank(evs, at=AT, window_seconds=3600)
    b = ranking.rank(list(reversed(evs)), at=AT, window_seconds=3600)
    assert [(c.event["id"], c.count, c.score) for c in a.causes] == [(c.event["id"], c.count, c.score) for c in b.causes]


def test_recency_never_lifts_a_read_above_a_change_and_limits_apply() -> None:
    evs = [ev("old-config", 359, "config.changed"), ev("fresh-read", 0, "db.query")]
    assert [c.event["id"] for c in ranking.rank(evs, at=AT, window_seconds=6 * 3600, limit=1).causes] == ["old-config"]


def test_target_forms_and_how_a_typed_name_matches() -> None:
    arn = "arn:aws:cloudtrail:us-east-1:1234:trail/ct-stop-trail"
    assert target_forms("cloudtrail.trail", arn) == [arn, "ct-stop-trail", "cloudtrail.trail:ct-stop-trail"]
    assert target_forms("database", "database/payments-db", "payments-db", "payments") == [
        "database/payments-db", "payments-db", "payments", "database:payments-db"]
    assert how_matched("ct-stop-trail", "cloudtrail.trail", arn) == "last segment"
    assert how_matched(arn, "cloudtrail.trail", arn) == "target.id"
    assert how_matched("database:payments-db", "database", "database/payments-db") == "kind:name"
    assert how_matched("payments", "database", "database/payments-db", "payments-db", "payments") == "target.service"
    assert how_matched("k8s:payments-db", "database", "database/payments-db") == ""
    assert how_matched("orders-db", "database", "database/payments-db") == ""
    # One way only: a qualified name does not match a target that only has the short one.
    assert how_matched("acme/api", "service", "api", "api") == ""


def test_matches_are_distinct_targets_strongest_first() -> None:
    rows = [{"target_kind": "k8s.deployment", "target_id": "prod/payments-db", "events": 5},
            {"target_kind": "database", "target_id": "payments-db", "events": 1},
            {"target_kind": "database", "target_id": "payments-db", "events": 2},
            {"target_kind": "database", "target_id": "orders-db", "events": 9}]
    found = matches("payments-db", rows)
    assert [(m.id, m.how, m.events) for m in found] == [("payments-db", "target.id", 3),
                                                        ("prod/payments-db", "last segment", 5)]


def test_topology_accepts_every_form_of_a_name() -> None:
    t = Topology.from_obj({"depends_on": {"payments-api": ["database/payments-db"],
                                          "arn:aws:lambda:us-east-1:1:function:export": ["payments-api"]}})
    assert t.related("payments-db") == {"payments-db", "database/payments-db", "payments-api"}
    assert t.related("database:payments-db") >= {"database/payments-db", "payments-api"}
    assert "payments-api" in t.related("export") and "database/payments-db" in t.related("export")
    assert names("database:payments-db", "database/payments-db") and names("api", "prod/api")
    assert not names("prod/api", "api") and not names("prod/api", "staging/api")


def test_story_collects_what_the_links_and_types_tell() -> None:
    chain = [
        ev("c", 60, "git.commit", links=("commit:abc",)),
        ev("r", 50, "change.reviewed", links=("change:acme/api#42",)),
        ev("m", 45, "change.merged", links=("change:acme/api#42", "commit:abc")),
        ev("ci", 40, "ci.run.succeeded", links=("commit:abc",)),
        ev("d", 30, "deploy.created", links=("deploy:9", "commit:abc")),
        ev("q", 5, "db.query", links=("session:postgres:pg1:s1", "trace:t1")),
    ]
    s = story(chain)
    assert s["commits"] == ["abc"] and s["changes"] == ["acme/api#42"]
    assert s["reviewers"] == ["user-r (claimed)"] and s["deployers"] == ["user-d (claimed)"]
    assert s["ci"] == ["ci.run.succeeded success"]
    assert s["sessions"] == ["postgres:pg1:s1"] and s["traces"] == ["t1"]
    assert len(s["actors"]) == 6
