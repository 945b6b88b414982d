"""Terraform plan normalizer (pipeline/sources/terraform.py) on hand-written plans: actions,
sensitive and unknown values, skipped no-ops, ids, links and malformed input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from keyed_helpers import marker as keyed_marker

from pipeline.errors import DecodeError
from pipeline.model import decode, encode
from pipeline.sources import terraform
from pipeline.sources.terraform import KNOWN_AFTER_APPLY, mark_unknown, mask_sensitive

PLANNED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def marker(value: Any) -> str:
    data = (
        value.encode()
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    )
    return keyed_marker(data)


def rc(
    address: str, actions: list[str], before: Any = None, after: Any = None, **change: Any
) -> dict[str, Any]:
    rtype, _, name = address.rpartition(".")
    return {
        "address": address,
        "mode": "managed",
        "type": rtype,
        "name": name,
        "provider_name": "registry.terraform.io/hashicorp/aws",
        "change": {"actions": actions, "before": before, "after": after, **change},
    }


def plan(*changes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"format_version": "1.2", "terraform_version": "1.9.0", "resource_changes": list(changes), **extra}


def events(p: dict[str, Any], **kw: Any) -> list[Any]:
    kw.setdefault("planned_at", PLANNED_AT)
    out = terraform.to_events(p, scope="acme", plan_name=kw.pop("plan_name", "prod/plan-1"), **kw)
    for event in out:
        assert decode(encode(event)) == event
    return out


def test_update_with_sensitive_and_unknown_values() -> None:
    db = rc(
        "aws_db_instance.main",
        ["update"],
        before={
            "instance_class": "db.t3.small",
            "password": "old-pw",
            "tags": {"team": "shop"},
            "endpoint": "db:5432",
        },
        after={"instance_class": "db.t3.large", "password": "new-pw", "tags": {"team": "shop"}},
        before_sensitive={"password": True},
        after_sensitive={"password": True},
        after_unknown={"endpoint": True, "tags": {}},
    )
    (event,) = events(plan(db))
    assert event.type == "terraform.resource.update" and event.action == "update"
    assert event.outcome == "unknown"  # planned, not applied
    assert event.target.kind == "terraform.resource" and event.target.id == "aws_db_instance.main"
    assert event.target.name == "aws_db_instance.main"
    assert event.diff == {
        "changed": ["endpoint", "instance_class", "password"],
        "before": {"endpoint": "db:5432", "instance_class": "db.t3.small", "password": marker("old-pw")},
        "after": {
            "endpoint": KNOWN_AFTER_APPLY,
            "instance_class": "db.t3.large",
            "password": marker("new-pw"),
        },
    }
    text = encode(event).decode()
    assert "old-pw" not in text and "new-pw" not in text
    assert event.raw["resource_change"]["change"]["after"]["password"] == marker("new-pw")
    assert event.raw["plan"]["name"] == "prod/plan-1"


def test_unmarked_secrets_are_redacted_on_top() -> None:
    (event,) = events(
        plan(rc("aws_ssm_parameter.token", ["create"], after={"name": "/x", "value": "v", "api_key": "k-1"}))
    )
    assert event.diff["after"]["api_key"] == marker("k-1")
    assert event.diff["after"]["name"] == "/x"


def test_actions_map_to_types_and_pure_no_ops_are_skipped() -> None:
    p = plan(
        rc("null_resource.a", ["create"], after={}),
        rc("null_resource.b", ["delete"], before={"id": "1"}),
        rc("null_resource.c", ["delete", "create"], before={"id": "2"}, after={}),
        rc("null_resource.d", ["create", "delete"], before={"id": "3"}, after={}),
        {**rc("data.http.e", ["read"], after={}), "mode": "data"},
        rc("null_resource.f", ["no-op"], before={"id": "4"}, after={"id": "4"}),
        {
            **rc("null_resource.g", ["no-op"], before={"id": "5"}, after={"id": "5"}),
            "previous_address": "null_resource.old",
        },
        rc("null_resource.h", ["no-op"], before={"id": "6"}, after={"id": "6"}, importing={"id": "6"}),
        rc("null_resource.i", ["forget"], before={"id": "7"}),
    )
    got = {e.target.id: e.type for e in events(p)}
    assert got == {
        "null_resource.a": "terraform.resource.create",
        "null_resource.b": "terraform.resource.delete",
        "null_resource.c": "terraform.resource.replace",
        "null_resource.d": "terraform.resource.replace",
        "data.http.e": "terraform.resource.read",
        "null_resource.g": "terraform.resource.move",
        "null_resource.h": "terraform.resource.import",
        "null_resource.i": "terraform.resource.forget",
    }
    assert terraform.count_changes(p) == {
        "resource_changes": 9, "output_changes": 0, "action_invocations": 0, "skipped_no_op": 1,
    }  # fmt: skip
    (moved,) = [e for e in events(p) if e.target.id == "null_resource.g"]
    assert moved.diff == {"changed": ["address"], "before": {"address": "null_resource.old"},
                          "after": {"address": "null_resource.g"}}  # fmt: skip


def test_outputs_and_action_invocations() -> None:
    p = plan(
        output_changes={
            "db_password": {"actions": ["create"], "before": None, "after": "pw", "after_unknown": False,
                            "before_sensitive": True, "after_sensitive": True},
            "url": {"actions": ["update"], "before": "a", "after_unknown": True},
            "same": {"actions": ["no-op"], "before": 1, "after": 1},
        },
        action_invocations=[{"address": "action.notify.ops", "type": "notify", "config_values": {"token": "t", "to": "ops"},
                             "config_sensitive": {"to": True}}],
    )  # fmt: skip
    by_id = {e.target.id: e for e in events(p)}
    assert set(by_id) == {"output.db_password", "output.url", "action.notify.ops"}
    pw = by_id["output.db_password"]
    assert pw.type == "terraform.output.create" and pw.diff["after"] == {"db_password": marker("pw")}
    assert pw.raw["output_change"]["before"] is None  # null stays null, never a marker
    assert by_id["output.url"].diff["after"] == {"url": KNOWN_AFTER_APPLY}
    invoke = by_id["action.notify.ops"]
    assert invoke.type == "terraform.action.invoke"
    assert invoke.raw["action_invocation"]["config_values"] == {"token": marker("t"), "to": marker("ops")}


def test_ids_session_links_time_and_actor() -> None:
    p = plan(rc("null_resource.a", ["create"], after={}), rc("null_resource.b", ["create"], after={}))
    first, second = events(p)
    assert first.id != second.id
    assert [e.id for e in events(p)] == [first.id, second.id]  # replay: same ids
    assert [e.id for e in events(p, plan_name="prod/plan-2")] != [first.id, second.id]
    changed = plan(
        rc("null_resource.a", ["create"], after={"x": 1}), rc("null_resource.b", ["create"], after={})
    )
    assert events(changed)[1].id != second.id  # another plan content, another event
    session = [link for link in first.links if link.startswith("session:terraform:")]
    assert len(session) == 1 and session[0] in second.links
    linked = events(p, links=["commit:" + "a" * 40])
    assert "commit:" + "a" * 40 in linked[0].links
    assert first.time == PLANNED_AT
    stamped = events({**p, "timestamp": "2025-01-02T03:04:05Z"})
    assert stamped[0].time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert first.actor.kind == "unknown" and first.actor.assurance == "none"
    ci = {
        "id": "github:ci-bot[bot]",
        "kind": "service",
        "assurance": "authenticated",
        "principal": "github:ci-bot[bot]",
    }
    assert events(p, actor=ci)[0].actor.id == "github:ci-bot[bot]"
    assert events({**p, "errored": True})[0].outcome == "failure"


def test_mask_and_unknown_helpers() -> None:
    value = {"a": "x", "b": [{"c": "y"}, {"c": "z"}], "d": None}
    assert mask_sensitive(value, {"b": [{}, {"c": True}], "d": True}) == {
        "a": "x",
        "b": [{"c": "y"}, {"c": marker("z")}],
        "d": None,
    }
    assert mask_sensitive("x", True) == marker("x") and mask_sensitive({"k": 1}, True) == marker({"k": 1})
    assert mask_sensitive(value, False) == value
    assert mark_unknown({"a": 1}, {"b": True, "c": {}, "d": [{"e": True}]}) == {
        "a": 1,
        "b": KNOWN_AFTER_APPLY,
        "d": [{"e": KNOWN_AFTER_APPLY}],
    }
    assert mark_unknown(None, True) == KNOWN_AFTER_APPLY
    assert mark_unknown(None, {}) is None


@pytest.mark.parametrize(
    ("p", "field"),
    [
        ([], "$"),
        ({"resource_changes": []}, "$.format_version"),
        (plan(rc("a.b", ["create"]), timestamp=None), "$.timestamp"),  # no timestamp and no planned_at
        ({"format_version": "1.2", "resource_changes": {"a": 1}}, "$.resource_changes"),
        (plan("junk"), "$.resource_changes[0]"),
        (plan({"change": {"actions": ["create"]}}), "$.resource_changes[0].address"),
        (plan({"address": "a.b"}), "$.resource_changes[0].change"),
        (plan({"address": "a.b", "change": {"actions": "create"}}), "$.resource_changes[0].change.actions"),
        ({"format_version": "1.2", "output_changes": []}, "$.output_changes"),
        ({"format_version": "1.2", "output_changes": {"o": {"actions": None}}}, "$.output_changes.o.actions"),
        ({"format_version": "1.2", "action_invocations": [{"type": "x"}]}, "$.action_invocations[0].address"),
    ],
)
def test_malformed_plans_raise_decode_error(p: Any, field: str) -> None:
    planned_at = None if field == "$.timestamp" else PLANNED_AT
    with pytest.raises(DecodeError) as info:
        terraform.to_events(p, scope="acme", plan_name="x", planned_at=planned_at)
    assert info.value.field == field, info.value.message


def test_bad_arguments_raise_decode_error() -> None:
    with pytest.raises(DecodeError, match="plan_name"):
        terraform.to_events(plan(), scope="acme", plan_name=" ", planned_at=PLANNED_AT)
    with pytest.raises(DecodeError, match="timezone-aware"):
        terraform.to_events(plan(), scope="acme", plan_name="x", planned_at=datetime(2024, 1, 1))
    with pytest.raises(DecodeError):
        terraform.count_changes("plan")
