"""Damaged real records: the normalizers raise DecodeError (naming a field), never anything else.

Each case takes a real record, replaces one value (up to two levels deep) with a value of the
wrong shape, and normalizes it. Either it still normalizes, or it fails with
:class:`pipeline.errors.DecodeError` -- a KeyError/TypeError traceback would crash a worker.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _sources_corpus import DATA, GITHUB_DIR, K8S_DIR, TERRAFORM_DIR, missing_reason, read_json_documents

from pipeline.errors import DecodeError
from pipeline.sources import github, k8s_audit, terraform

_reason = missing_reason(DATA)
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

WHEN = datetime(2024, 6, 1, tzinfo=UTC)
REPLACEMENTS: list[Any] = [None, 0, "", [1], {"a": 1}, True]


# Inside these (large, repeated) objects only the fields the normalizers read are damaged.
READ_FIELDS = {
    "repository": {"full_name", "name", "id", "pushed_at", "updated_at", "created_at"},
    "sender": {"login", "type"},
    "organization": {"login"},
    "installation": {"id", "account", "updated_at"},
    "pull_request": {"number", "title", "head", "base", "merged", "merge_commit_sha", "merged_at", "closed_at",
                     "updated_at", "created_at"},
    "workflow_run": {"id", "name", "path", "head_sha", "head_branch", "status", "conclusion", "updated_at",
                     "pull_requests", "run_started_at", "created_at"},
}  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = (), depth: int = 0) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if depth >= 2:
        return
    if isinstance(node, dict):
        allowed = READ_FIELDS.get(prefix[-1]) if prefix and isinstance(prefix[-1], str) else None
        for key, value in node.items():
            if allowed is None or key in allowed:
                yield from _paths(value, (*prefix, key), depth + 1)
    elif isinstance(node, list):
        for i, value in enumerate(node[:2]):
            yield from _paths(value, (*prefix, i), depth + 1)


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return doc


def _check(doc: Any, normalize: Callable[[Any], Any]) -> int:
    tried = 0
    for path in _paths(doc):
        for value in REPLACEMENTS:
            tried += 1
            try:
                normalize(_replace(doc, path, value))
            except DecodeError as exc:
                assert exc.message
            except Exception as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"{path} = {value!r}: {type(exc).__name__}: {exc}")
    return tried


GITHUB_CASES = ["push/with-new-branch.payload.json", "pull_request/closed.payload.json",
                "deployment_status/payload.json", "workflow_run/completed.with-pull-requests.payload.json",
                "membership/added.payload.json", "org_block/blocked.payload.json"]  # fmt: skip


@pytest.mark.parametrize("rel", GITHUB_CASES)
def test_damaged_github_payloads(rel: str) -> None:
    path = GITHUB_DIR / rel
    payload = json.loads(path.read_text(encoding="utf-8"))
    tried = _check(
        payload, lambda p: github.to_events(p, event_name=path.parent.name, scope="s", received_at=WHEN)
    )
    assert tried > 40


@pytest.mark.parametrize("name", ["create_deployment.json", "create_configmap.json", "exec_pod.json",
                                  "create_secret.json", "attach_cluster_admin_role.json"])  # fmt: skip
def test_damaged_k8s_audit_events(name: str) -> None:
    (record,) = read_json_documents(K8S_DIR / name)[:1]
    assert _check(record, lambda r: k8s_audit.to_events(r, scope="s")) > 50


@pytest.mark.parametrize("rel", ["110_sensitive_values/plan.json", "actions/plan.json", "identity/plan.json"])
def test_damaged_terraform_plans(rel: str) -> None:
    plan = json.loads(Path(TERRAFORM_DIR / rel).read_text(encoding="utf-8"))
    assert _check(plan, lambda p: terraform.to_events(p, scope="s", plan_name="p", planned_at=WHEN)) > 20
