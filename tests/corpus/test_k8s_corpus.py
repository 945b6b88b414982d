"""Every Falco Kubernetes audit sample normalizes into valid envelopes (pipeline/sources/k8s_audit.py).

46 files hold 51 audit events (``create_configmap_sensitive_values.json`` is JSON Lines with six).
Run with ``pytest -s`` to see the event count per type.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _sources_corpus import K8S_DIR, check_envelope, missing_reason, print_counts, read_json_documents

from pipeline.model import encode
from pipeline.sources import k8s_audit
from pipeline.sources.redact import redact

_reason = missing_reason(K8S_DIR)
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

FILES = sorted(K8S_DIR.glob("*.json"))
EXPECTED_FILES = 46
EXPECTED_EVENTS = 51


def _records(path: Path) -> list[dict[str, Any]]:
    return [rec for doc in read_json_documents(path) for rec in k8s_audit.split_records(doc)]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_audit_file_normalizes_to_valid_envelopes(path: Path) -> None:
    records = _records(path)
    assert records
    for record in records:
        events = k8s_audit.to_events(record, scope="corpus", cluster="minikube")
        assert len(events) == 1
        (event,) = events
        check_envelope(event)
        assert f"request:{record['auditID']}" in event.links
        assert event.source == "k8s-audit://minikube"
        assert redact(event.raw) == event.raw
        if event.target.kind == "k8s.secrets":
            for field in ("requestObject", "responseObject"):
                body = event.raw.get(field) or {}
                assert "data" not in body and "stringData" not in body
            assert event.diff is None


def test_every_audit_event_becomes_an_event_and_counts_per_type() -> None:
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    audit_ids: set[str] = set()
    for path in FILES:
        for record in _records(path):
            (event,) = k8s_audit.to_events(record, scope="corpus")
            counts[event.type] += 1
            ids.add(event.id)
            audit_ids.add(record["auditID"])
    print_counts(f"k8s audit ({len(FILES)} files)", counts)

    assert len(FILES) == EXPECTED_FILES
    assert sum(counts.values()) == EXPECTED_EVENTS
    assert len(ids) == len(audit_ids)  # one id per auditID, whatever the file
    # PROVENANCE.md: create configmaps 8 + delete 1; create secrets 3 + delete 1; RBAC create 5+2,
    # delete 2+1, patch 1; create/delete deployments 1 each; pods/exec and pods/attach 1 each.
    assert counts["config.changed"] == 9
    assert counts["config.secret_changed"] == 4
    assert counts["access.rbac.create"] == 7 and counts["access.rbac.delete"] == 3
    assert counts["access.rbac.patch"] == 1
    assert counts["deploy.updated"] == 1 and counts["deploy.deleted"] == 1
    assert counts["k8s.exec"] == 1 and counts["k8s.attach"] == 1
    assert counts["k8s.pods.create"] == 10 and counts["k8s.pods.get"] == 1


def test_configmap_credentials_never_reach_the_envelope() -> None:
    path = K8S_DIR / "create_configmap_sensitive_values.json"
    records = _records(path)
    assert len(records) == 6
    for record in records:
        (event,) = k8s_audit.to_events(record, scope="corpus")
        data = encode(event).decode()
        assert "MY-KEY" not in data and "MY-ID" not in data
        # the harmless properties file stays readable
        assert "color.good=purple" in data
        assert event.diff is not None and 'data["access.properties"]' in event.diff["changed"]


def test_stages_of_one_request_collapse_to_one_id() -> None:
    (record,) = _records(K8S_DIR / "exec_pod.json")
    started = dict(record, stage="ResponseStarted")
    complete = dict(record, stage="ResponseComplete", stageTimestamp="2018-10-26T13:40:00.000000Z")
    (a,) = k8s_audit.to_events(started, scope="corpus")
    (b,) = k8s_audit.to_events(complete, scope="corpus")
    assert a.id == b.id and a.time == b.time
    assert json.loads(encode(a))["type"] == "k8s.exec"
