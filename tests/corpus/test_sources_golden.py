"""Golden envelopes: the exact canonical output for a representative handful of real records.

``tests/golden/<source>/<case>.json`` holds the list of ``to_dict`` envelopes the normalizer must
produce for that input. After an intended change, regenerate them with::

    CAUSELOG_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/corpus/test_sources_golden.py

and *read the diff*: a golden file is a reviewed statement of what is right (links, actor, type,
redaction), not a snapshot of whatever the code did.

Inputs come from ``../shared/data``; ``pull_request_closed_merged`` is derived from the real
``pull_request/closed.payload.json`` (the corpus has no merged pull request) by setting the
fields GitHub sets on a merge.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _sources_corpus import (
    DATA,
    GITHUB_DIR,
    GOLDEN,
    K8S_DIR,
    TERRAFORM_DIR,
    as_golden,
    check_envelope,
    missing_reason,
    read_json_documents,
)

from pipeline.model import Event
from pipeline.sources import github, k8s_audit, terraform

_reason = missing_reason(DATA)
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

UPDATE = os.environ.get("CAUSELOG_UPDATE_GOLDEN") == "1"
RECEIVED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PLANNED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _github(
    rel: str, *, patch: Callable[[dict], None] | None = None, **kw: object
) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        path = GITHUB_DIR / rel
        payload = json.loads(path.read_text(encoding="utf-8"))
        if patch is not None:
            payload = copy.deepcopy(payload)
            patch(payload)
        return github.to_events(payload, event_name=path.parent.name, scope="acme", **kw)  # type: ignore[arg-type]

    return run


def _merge(payload: dict) -> None:
    pr = payload["pull_request"]
    pr["merged"] = True
    pr["merged_at"] = pr["closed_at"]
    pr["merged_by"] = copy.deepcopy(payload["sender"])
    pr["mergeable"] = None
    pr["mergeable_state"] = "unknown"


def _k8s(name: str) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        return [
            event
            for doc in read_json_documents(K8S_DIR / name)
            for record in k8s_audit.split_records(doc)
            for event in k8s_audit.to_events(record, scope="acme", cluster="minikube")
        ]

    return run


def _terraform(rel: str) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        plan = json.loads((TERRAFORM_DIR / rel).read_text(encoding="utf-8"))
        return terraform.to_events(plan, scope="acme", plan_name=rel, planned_at=PLANNED_AT)

    return run


CASES: dict[str, Callable[[], list[Event]]] = {
    "github/push": _github(
        "push/with-new-branch.payload.json", delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958"
    ),
    "github/push_tag_deleted": _github("push/payload.json"),
    "github/pull_request_closed": _github("pull_request/closed.payload.json"),
    "github/pull_request_closed_merged": _github("pull_request/closed.payload.json", patch=_merge),
    "github/pull_request_review_submitted": _github("pull_request_review/submitted.payload.json"),
    "github/deployment": _github("deployment/payload.json"),
    "github/deployment_status": _github("deployment_status/payload.json"),
    "github/workflow_run_completed": _github("workflow_run/completed.with-pull-requests.payload.json"),
    "github/workflow_job_queued_with_deployment": _github("workflow_job/queued.with-deployment.payload.json"),
    "github/member_added": _github("member/added.payload.json", received_at=RECEIVED_AT),
    "github/branch_protection_rule_edited": _github("branch_protection_rule/edited.payload.json"),
    "github/org_block_blocked": _github("org_block/blocked.payload.json", received_at=RECEIVED_AT),
    "k8s/create_configmap_sensitive_values": _k8s("create_configmap_sensitive_values.json"),
    "k8s/create_secret": _k8s("create_secret.json"),
    "k8s/create_deployment": _k8s("create_deployment.json"),
    "k8s/exec_pod": _k8s("exec_pod.json"),
    "k8s/attach_cluster_admin_role": _k8s("attach_cluster_admin_role.json"),
    "k8s/anonymous_creates_namespace_foo": _k8s("anonymous_creates_namespace_foo.json"),
    "terraform/110_sensitive_values": _terraform("110_sensitive_values/plan.json"),
    "terraform/actions": _terraform("actions/plan.json"),
    "terraform/basic_0.15_sensitive_attribute": _terraform("basic/plan-0.15.json"),
    "terraform/moved_block": _terraform("moved_block/plan.json"),
}


def _golden_path(case: str) -> Path:
    return GOLDEN / f"{case}.json"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    events = CASES[case]()
    for event in events:
        check_envelope(event)
    actual = as_golden(events)
    path = _golden_path(case)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(actual, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return
    if not path.is_file():
        pytest.fail(f"{path} is missing; generate it with CAUSELOG_UPDATE_GOLDEN=1 and review it")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert actual == expected, f"{case} differs from {path}; if intended, regenerate and review the diff"


def test_no_stray_golden_files() -> None:
    present = {str(p.relative_to(GOLDEN).with_suffix("")) for p in GOLDEN.rglob("*.json")}
    stray = {p for p in present if p.split("/", 1)[0] in ("github", "k8s", "terraform")} - set(CASES)
    assert not stray, f"golden files without a case: {sorted(stray)}"
