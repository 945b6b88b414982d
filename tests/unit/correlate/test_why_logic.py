"""Pure parts of `why`: the topology and the ranking of candidate causes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.correlate.explain import rank, score, story
from pipeline.correlate.topology import Topology, load_topology
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


def test_score_prefers_recent_failed_and_risky_changes() -> None:
    w = 6 * 3600
    assert score(ev("a", 10, "config.changed"), AT, w) > score(ev("b", 10, "git.commit"), AT, w)
    assert score(ev("a", 10, "git.commit"), AT, w) > score(ev("b", 300, "git.commit"), AT, w)
    assert score(ev("a", 10, "ci.run", "failure"), AT, w) > score(ev("b", 10, "ci.run"), AT, w)
    assert score(ev("a", 400, "git.commit"), AT, w) == 0.0


def test_rank_orders_by_score_then_recency_and_limits() -> None:
    cands = [ev("old-config", 200, "config.changed"), ev("new-commit", 1, "git.commit"),
             ev("deploy", 30, "deploy.created"), ev("twin", 30, "deploy.created")]
    ranked = rank(cands, {}, at=AT, window_seconds=6 * 3600, limit=3)
    # Same score and time: by id. A 200-minute-old config change still beats a fresh commit.
    assert [c.event["id"] for c in ranked] == ["deploy", "twin", "old-config"]


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
