"""Terraform plans (``terraform show -json <planfile>``) -> change events (pure part).

``to_events(plan, scope=..., plan_name=..., planned_at=...)`` emits one event per planned change:

=====================================  ===========================================================
``resource_changes[]``                 ``terraform.resource.<action>``
``output_changes{}``                   ``terraform.output.<action>``
``action_invocations[]`` (TF >= 1.14)  ``terraform.action.invoke``
=====================================  ===========================================================

``<action>`` is ``create``, ``update``, ``delete``, ``replace`` (``["delete", "create"]`` or
``["create", "delete"]``), ``read`` (data sources), ``forget``, or -- for an otherwise unchanged
resource -- ``move`` (it has a ``previous_address``: a ``moved`` block) or ``import`` (it is
being imported). A pure ``no-op`` is **skipped**: it is not a change; :func:`count_changes` says
how many were skipped so completeness can still be checked.

These are *planned* changes: ``outcome`` is ``unknown`` (a plan does not say whether it was
applied; an apply log would), or ``failure`` when the plan itself ``errored``. ``action`` is the
action word.

Target: kind ``terraform.resource`` (id = resource address, ``module.foo.null_resource.baz[0]``;
name = ``<type>.<name>``), ``terraform.output`` (id ``output.<name>``) or ``terraform.action``.

Diff (:func:`~pipeline.sources.diff.structured_diff`): ``change.before`` -> ``change.after``
with every non-null value marked in ``before_sensitive``/``after_sensitive`` replaced by
``redacted:hmac-sha256:v1:<32 hex>`` (a keyed hash of its canonical JSON; strings of their UTF-8 bytes) and
every value marked in ``after_unknown`` shown as ``(known after apply)``; then
:func:`~pipeline.sources.redact.redact` runs on top (``password`` attributes and credential-
shaped strings are hashed even when the provider did not mark them). Outputs diff as
``{<name>: before}`` -> ``{<name>: after}``; a move as ``address: <previous> -> <address>``.

``raw`` is ``{"plan": {name, format_version, terraform_version, timestamp, digest},
"resource_change" | "output_change" | "action_invocation": <the entry, sensitive values
masked, redacted>}`` -- never the whole plan, whose ``variables``, ``prior_state`` and
``planned_values`` repeat sensitive values.

Id: ``event_id("terraform", plan_name, <keyed hash of the plan's canonical JSON>, <kind>, <address>
[, <deposed key>])``: replaying the same plan gives the same ids; another plan (or the same one
under another name) gives new ones. Every event of one plan shares the link
``session:terraform:<event_id("terraform-plan", plan_name, digest)>``, so a plan's changes form
one chain; pass ``links`` (``commit:<sha>`` of the configuration, ``change:<repo>#<n>`` of the
pull request that ran the plan) to join it to the rest.

Time: the plan's ``timestamp`` (Terraform >= 1.5), else ``planned_at``, which the caller must
then pass (DecodeError otherwise). Actor: ``actor`` when the caller knows who planned (CI
identity); plans do not record it, so by default ``unknown`` with assurance ``none``.
``source`` is ``terraform://<plan_name>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pipeline.model import Event, event_id
from pipeline.sources._normalize import (
    as_utc,
    build,
    canonical_digest,
    fail,
    first_time,
    need,
    require_dict,
    slug,
)
from pipeline.sources.diff import structured_diff
from pipeline.sources.redact import redact, redact_value

__all__ = ["KNOWN_AFTER_APPLY", "count_changes", "mask_sensitive", "mark_unknown", "to_events"]

KNOWN_AFTER_APPLY = "(known after apply)"

_UNKNOWN_ACTOR = {
    "id": "unknown",
    "kind": "unknown",
    "assurance": "none",
    "display": "",
    "principal": "",
    "verified": False,
}


def mask_sensitive(value: Any, sensitive: Any) -> Any:
    """``value`` with every part marked ``true`` in the parallel ``sensitive`` tree hashed.

    ``None`` stays ``None``: an absent value reveals nothing, and a marker would suggest one.
    """
    if value is None:
        return None
    if sensitive is True:
        return redact_value(value)
    if isinstance(sensitive, dict) and isinstance(value, dict):
        return {k: mask_sensitive(v, sensitive.get(k)) for k, v in value.items()}
    if isinstance(sensitive, list) and isinstance(value, list):
        return [mask_sensitive(v, sensitive[i] if i < len(sensitive) else None) for i, v in enumerate(value)]
    return value


def _has_unknown(unknown: Any) -> bool:
    if unknown is True:
        return True
    if isinstance(unknown, dict):
        return any(_has_unknown(u) for u in unknown.values())
    if isinstance(unknown, list):
        return any(_has_unknown(u) for u in unknown)
    return False


def mark_unknown(value: Any, unknown: Any) -> Any:
    """``value`` with every part marked ``true`` in ``after_unknown`` set to ``(known after apply)``."""
    if unknown is True:
        return KNOWN_AFTER_APPLY
    if isinstance(unknown, dict) and _has_unknown(unknown):
        out = dict(value) if isinstance(value, dict) else {}
        for k, u in unknown.items():
            if _has_unknown(u):
                out[k] = mark_unknown(out.get(k), u)
        return out
    if isinstance(unknown, list) and _has_unknown(unknown):
        items = list(value) if isinstance(value, list) else []
        for i, u in enumerate(unknown):
            if not _has_unknown(u):
                continue
            if i < len(items):
                items[i] = mark_unknown(items[i], u)
            else:
                items.append(mark_unknown(None, u))
        return items
    return value


def _action_word(actions: list[str], entry: dict[str, Any], change: dict[str, Any]) -> str | None:
    """The action word, or None for a pure no-op (skipped)."""
    if actions in (["delete", "create"], ["create", "delete"]):
        return "replace"
    if actions == ["no-op"] or not actions:
        previous = entry.get("previous_address")
        if isinstance(previous, str) and previous and previous != entry.get("address"):
            return "move"
        if change.get("importing"):
            return "import"
        return None
    return "_".join(slug(a) for a in actions)


def _actions(obj: dict[str, Any], field: str) -> list[str]:
    actions = obj.get("actions")
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise fail("wrong_type", "expected an array of action names", field, actions)
    return actions


def _list(plan: dict[str, Any], key: str) -> list[Any]:
    value = plan.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail("wrong_type", "expected an array", f"$.{key}", type(value).__name__)
    return value


def _outputs(plan: dict[str, Any]) -> dict[str, Any]:
    value = plan.get("output_changes")
    if value is None:
        return {}
    return require_dict(value, "$.output_changes")


def count_changes(plan: Any) -> dict[str, int]:
    """How many entries a plan has and how many :func:`to_events` skips as pure no-ops."""
    plan = require_dict(plan, "$", "a Terraform plan object")
    skipped = 0
    resources = _list(plan, "resource_changes")
    for i, rc in enumerate(resources):
        rc = require_dict(rc, f"$.resource_changes[{i}]")
        change = require_dict(rc.get("change"), f"$.resource_changes[{i}].change")
        if _action_word(_actions(change, f"$.resource_changes[{i}].change.actions"), rc, change) is None:
            skipped += 1
    outputs = _outputs(plan)
    for name, oc in outputs.items():
        oc = require_dict(oc, f"$.output_changes.{name}")
        if _action_word(_actions(oc, f"$.output_changes.{name}.actions"), {}, oc) is None:
            skipped += 1
    return {
        "resource_changes": len(resources),
        "output_changes": len(outputs),
        "action_invocations": len(_list(plan, "action_invocations")),
        "skipped_no_op": skipped,
    }


def _diff(before: Any, after: Any, change: dict[str, Any]) -> dict[str, Any] | None:
    before = mask_sensitive(before, change.get("before_sensitive"))
    after = mark_unknown(mask_sensitive(after, change.get("after_sensitive")), change.get("after_unknown"))
    diff = structured_diff(before, after)
    return diff if diff["changed"] else None


def _masked_change(change: dict[str, Any]) -> dict[str, Any]:
    out = dict(change)
    if "before" in out:
        out["before"] = mask_sensitive(out["before"], change.get("before_sensitive"))
    if "after" in out:
        out["after"] = mask_sensitive(out["after"], change.get("after_sensitive"))
    return out


def to_events(
    plan: Any,
    *,
    scope: str,
    plan_name: str,
    planned_at: datetime | None = None,
    actor: dict[str, Any] | None = None,
    links: Iterable[str] = (),
) -> list[Event]:
    """The planned changes of one Terraform JSON plan (see the module docstring)."""
    plan = require_dict(plan, "$", "a Terraform plan object")
    if not isinstance(plan_name, str) or not plan_name.strip():
        raise fail("invalid_value", "a plan name is required", "plan_name", plan_name)
    need(plan, "format_version")
    found = first_time([("$.timestamp", plan.get("timestamp"))])
    if found is None:
        if planned_at is None:
            raise fail(
                "missing_field",
                "the plan has no timestamp; pass planned_at",
                "$.timestamp",
                plan.get("timestamp"),
            )
        found = ("planned_at", as_utc(planned_at, "planned_at"))
    digest = canonical_digest(plan)
    session = f"session:terraform:{event_id('terraform-plan', plan_name, digest)}"
    extra_links = [session, *links]
    outcome = "failure" if plan.get("errored") is True else "unknown"
    plan_info = {
        "name": plan_name,
        "format_version": plan.get("format_version"),
        "terraform_version": plan.get("terraform_version"),
        "timestamp": plan.get("timestamp"),
        "digest": digest,
    }
    base = {
        "source": f"terraform://{plan_name}",
        "time": found[1],
        "scope": scope,
        "actor": actor if actor is not None else _UNKNOWN_ACTOR,
        "outcome": outcome,
        "links": extra_links,
    }
    events: list[Event] = []

    for i, rc in enumerate(_list(plan, "resource_changes")):
        where = f"$.resource_changes[{i}]"
        rc = require_dict(rc, where)
        address = need(plan, "resource_changes", i, "address")
        change = need(plan, "resource_changes", i, "change", kind=dict)
        word = _action_word(_actions(change, f"{where}.change.actions"), rc, change)
        if word is None:
            continue
        deposed = rc.get("deposed")
        ident = [address] + ([str(deposed)] if deposed else [])
        rtype, rname = rc.get("type"), rc.get("name")
        name = f"{rtype}.{rname}" if isinstance(rtype, str) and isinstance(rname, str) else address
        envelope = {
            **base,
            "id": event_id("terraform", plan_name, digest, "resource", *ident),
            "type": f"terraform.resource.{word}",
            "target": {"kind": "terraform.resource", "id": address, "name": name},
            "action": word,
            "raw": redact({"plan": plan_info, "resource_change": {**rc, "change": _masked_change(change)}}),
        }
        if deposed:
            envelope["subject"] = f"deposed:{deposed}"
        diff: dict[str, Any] | None
        if word == "move":
            diff = structured_diff({"address": rc.get("previous_address")}, {"address": address})
        else:
            diff = _diff(change.get("before"), change.get("after"), change)
        if diff:
            envelope["diff"] = diff
        events.append(build(envelope))

    for name, oc in _outputs(plan).items():
        where = f"$.output_changes.{name}"
        oc = require_dict(oc, where)
        word = _action_word(_actions(oc, f"{where}.actions"), {}, oc)
        if word is None:
            continue
        wrap = {k: {name: oc[k]} if k in oc and oc[k] is not None else None for k in ("before", "after")}
        sens = {k: {name: oc.get(k)} for k in ("before_sensitive", "after_sensitive", "after_unknown")}
        envelope = {
            **base,
            "id": event_id("terraform", plan_name, digest, "output", name),
            "type": f"terraform.output.{word}",
            "target": {"kind": "terraform.output", "id": f"output.{name}", "name": str(name)},
            "action": word,
            "raw": redact({"plan": plan_info, "output_change": {"name": name, **_masked_change(oc)}}),
        }
        diff = _diff(wrap["before"], wrap["after"], sens)
        if diff:
            envelope["diff"] = diff
        events.append(build(envelope))

    for i, inv in enumerate(_list(plan, "action_invocations")):
        inv = require_dict(inv, f"$.action_invocations[{i}]")
        address = need(plan, "action_invocations", i, "address")
        masked = dict(inv)
        if "config_values" in masked:
            masked["config_values"] = mask_sensitive(masked["config_values"], inv.get("config_sensitive"))
        envelope = {
            **base,
            "id": event_id("terraform", plan_name, digest, "action", address),
            "type": "terraform.action.invoke",
            "target": {"kind": "terraform.action", "id": address, "name": str(inv.get("type") or address)},
            "action": "invoke",
            "raw": redact({"plan": plan_info, "action_invocation": masked}),
        }
        events.append(build(envelope))
    return events
