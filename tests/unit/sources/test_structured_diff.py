"""Structured diffs of nested values (pipeline/sources/diff.py)."""

from __future__ import annotations

from keyed_helpers import marker

from pipeline.sources.diff import format_path, leaf_paths, structured_diff


def test_changed_added_and_removed_leaves() -> None:
    before = {"spec": {"replicas": 2, "paused": False}, "data": {"DB_MAX_CONNECTIONS": "50", "OLD": "x"}}
    after = {"spec": {"replicas": 3, "paused": False}, "data": {"DB_MAX_CONNECTIONS": "80", "NEW": "y"}}

    diff = structured_diff(before, after)

    assert diff == {
        "changed": ["data.DB_MAX_CONNECTIONS", "data.NEW", "data.OLD", "spec.replicas"],
        "before": {"data.DB_MAX_CONNECTIONS": "50", "data.OLD": "x", "spec.replicas": 2},
        "after": {"data.DB_MAX_CONNECTIONS": "80", "data.NEW": "y", "spec.replicas": 3},
    }


def test_create_and_delete_against_nothing() -> None:
    obj = {"data": {"a": "1"}, "binaryData": {}}
    assert structured_diff(None, obj) == {
        "changed": ["binaryData", "data.a"],
        "before": {},
        "after": {"binaryData": {}, "data.a": "1"},
    }
    assert structured_diff(obj, None)["changed"] == ["binaryData", "data.a"]
    assert structured_diff(obj, None)["after"] == {}
    assert structured_diff(obj, obj) == {"changed": [], "before": {}, "after": {}}


def test_paths_index_lists_of_objects_and_quote_odd_keys() -> None:
    before = {"spec": {"containers": [{"name": "app", "image": "app:1.0"}], "args": ["--a"]}}
    after = {"spec": {"containers": [{"name": "app", "image": "app:1.1"}], "args": ["--a", "--b"]}}
    diff = structured_diff(before, after)
    assert diff["changed"] == ["spec.args", "spec.containers[0].image"]
    assert diff["after"]["spec.args"] == ["--a", "--b"]  # a list of plain values is one leaf
    assert format_path(("data", "ui.properties")) == 'data["ui.properties"]'
    assert format_path(("a", 0, "b c", 10)) == 'a[0]["b c"][10]'
    assert format_path(()) == "$"
    assert structured_diff("a", "b")["changed"] == ["$"]


def test_list_indices_sort_numerically() -> None:
    before = {"items": [{"v": i} for i in range(12)]}
    after = {"items": [{"v": i + 1} for i in range(12)]}
    changed = structured_diff(before, after)["changed"]
    assert changed[:3] == ["items[0].v", "items[1].v", "items[2].v"] and changed[-1] == "items[11].v"


def test_type_changes_are_changes() -> None:
    assert structured_diff({"a": 1}, {"a": True})["changed"] == ["a"]
    assert structured_diff({"a": 1}, {"a": 1.0})["changed"] == ["a"]
    assert structured_diff({"a": "1"}, {"a": 1})["changed"] == ["a"]


def test_empty_container_growing_children_is_reported_at_the_children() -> None:
    diff = structured_diff({"labels": {}}, {"labels": {"app": "web"}})
    assert diff["changed"] == ["labels.app"]


def test_secrets_are_hashed_but_their_change_stays_visible() -> None:
    before = {"data": {"DB_PASSWORD": "old-pw", "DB_HOST": "db1"}, "url": "postgres://u:pw1@db1/x"}
    after = {"data": {"DB_PASSWORD": "new-pw", "DB_HOST": "db1"}, "url": "postgres://u:pw2@db1/x"}
    diff = structured_diff(before, after)
    assert diff["changed"] == ["data.DB_PASSWORD", "url"]
    assert diff["before"]["data.DB_PASSWORD"] == marker("old-pw")
    assert diff["after"]["data.DB_PASSWORD"] == marker("new-pw")
    assert diff["after"]["url"] == f"postgres://u:{marker('pw2')}@db1/x"
    assert "old-pw" not in str(diff) and "new-pw" not in str(diff)
    # an unchanged secret is not reported
    same = structured_diff({"password": "x", "n": 1}, {"password": "x", "n": 2})
    assert same["changed"] == ["n"]


def test_unknown_before_and_truncation() -> None:
    diff = structured_diff(None, {"spec": {"replicas": 3}}, before_known=False)
    assert diff == {
        "changed": ["spec.replicas"],
        "before": {},
        "after": {"spec.replicas": 3},
        "before_known": False,
    }
    big = structured_diff({}, {f"k{i:04d}": i for i in range(50)}, max_paths=10)
    assert big["truncated"] is True and len(big["changed"]) == 10 and len(big["after"]) == 10


def test_leaf_paths() -> None:
    assert leaf_paths({"a": {"b": 1, "c": [{"d": 2}]}, "e": []}) == {"a.b": 1, "a.c[0].d": 2, "e": []}


def test_inputs_are_not_modified() -> None:
    before = {"password": "x", "a": {"b": [1, 2]}}
    after = {"password": "y", "a": {"b": [1, 3]}}
    snapshot = (repr(before), repr(after))
    structured_diff(before, after)
    assert (repr(before), repr(after)) == snapshot
