"""Every terraform-json sample plan normalizes into valid envelopes (pipeline/sources/terraform.py).

21 plans, format 0.1 to 1.2. One event per resource change, output change and action
invocation; pure no-ops are skipped and counted. Run with ``pytest -s`` to see the counts.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _sources_corpus import TERRAFORM_DIR, check_envelope, missing_reason, print_counts

from pipeline.model import encode
from pipeline.sources import terraform
from pipeline.sources.redact import redact

_reason = missing_reason(TERRAFORM_DIR)
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

FILES = sorted(TERRAFORM_DIR.rglob("*.json"))
EXPECTED_PLANS = 21
# What a CI wrapper would pass for plans older than Terraform 1.5 (no "timestamp").
PLANNED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _plan(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _name(path: Path) -> str:
    return str(path.relative_to(TERRAFORM_DIR))


@pytest.mark.parametrize("path", FILES, ids=[_name(p) for p in FILES])
def test_plan_normalizes_to_valid_envelopes(path: Path) -> None:
    plan = _plan(path)
    events = terraform.to_events(plan, scope="corpus", plan_name=_name(path), planned_at=PLANNED_AT)
    counted = terraform.count_changes(plan)

    expected = (
        counted["resource_changes"]
        + counted["output_changes"]
        + counted["action_invocations"]
        - counted["skipped_no_op"]
    )
    assert len(events) == expected
    sessions = {link for e in events for link in e.links if link.startswith("session:terraform:")}
    assert len(sessions) <= 1  # one plan, one chain
    for event in events:
        check_envelope(event)
        assert event.outcome == "unknown"
        assert redact(event.raw) == event.raw
        assert event.type.startswith(("terraform.resource.", "terraform.output.", "terraform.action."))
    # same plan, same name: same ids (replays are idempotent)
    again = terraform.to_events(plan, scope="corpus", plan_name=_name(path), planned_at=PLANNED_AT)
    assert [encode(e) for e in again] == [encode(e) for e in events]


def test_every_plan_is_read_and_counts_per_type() -> None:
    counts: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for path in FILES:
        plan = _plan(path)
        totals.update(terraform.count_changes(plan))
        for event in terraform.to_events(plan, scope="corpus", plan_name=_name(path), planned_at=PLANNED_AT):
            counts[event.type] += 1
    print_counts(f"terraform ({len(FILES)} plans)", counts)
    print(f"  entries: {dict(totals)}")

    assert len(FILES) == EXPECTED_PLANS
    assert sum(counts.values()) == (
        totals["resource_changes"]
        + totals["output_changes"]
        + totals["action_invocations"]
        - totals["skipped_no_op"]
    )
    assert counts["terraform.resource.replace"] == 2  # action_reason, config_resource_depends_on
    assert counts["terraform.resource.move"] == 1  # moved_block
    assert counts["terraform.action.invoke"] == 1  # actions
    assert counts["terraform.resource.read"] == 2  # data sources


def test_sensitive_values_are_hashed_never_shown() -> None:
    for name, secret in (("110_sensitive_values/plan.json", "bar"), ("basic/plan-0.15.json", "boop")):
        plan = _plan(TERRAFORM_DIR / name)
        events = terraform.to_events(plan, scope="corpus", plan_name=name, planned_at=PLANNED_AT)
        sensitive = [e for e in events if e.target.id in ("output.foo", "output.test", "test_instance.test")]
        assert sensitive
        for event in sensitive:
            text = encode(event).decode()
            assert f'"{secret}"' not in text
            assert "redacted:hmac-sha256:v1:" in text
