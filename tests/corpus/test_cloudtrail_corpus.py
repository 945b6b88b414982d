"""Every CloudTrail sample normalizes into valid envelopes (pipeline/sources/cloudtrail.py).

PROVENANCE.md: 35 Stratus Red Team files hold 310 records (JSON arrays); the OTRF file holds 103
records as JSON Lines (Logstash copies with ``@timestamp`` instead of ``eventTime``); the OTRF
honey-bucket CSV holds 301 CloudTrail-derived rows. Run with ``pytest -s`` for counts per type.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _audit_corpus import OTRF_CSV, OTRF_JSON, STRATUS_DIR, missing
from _sources_corpus import check_envelope, print_counts

from pipeline.model import Event, encode
from pipeline.sources import cloudtrail
from pipeline.sources.redact import redact

for _path in (STRATUS_DIR, OTRF_JSON, OTRF_CSV):
    if _reason := missing(_path):
        pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

STRATUS_FILES = sorted(STRATUS_DIR.glob("*.json"))


def _stratus(path: Path) -> list[dict[str, Any]]:
    return cloudtrail.iter_records(json.loads(path.read_text(encoding="utf-8")))


def _otrf() -> list[dict[str, Any]]:
    lines = OTRF_JSON.read_text(encoding="utf-8").splitlines()
    return [rec for line in lines if line.strip() for rec in cloudtrail.iter_records(json.loads(line))]


def _csv() -> list[dict[str, Any]]:
    return cloudtrail.records_from_csv(OTRF_CSV.read_text(encoding="utf-8"))


def _one(record: dict[str, Any]) -> Event:
    events = cloudtrail.to_events(record, scope="corpus")
    assert len(events) == 1
    return events[0]


@pytest.mark.parametrize("path", STRATUS_FILES, ids=[p.name for p in STRATUS_FILES])
def test_stratus_file_normalizes_to_valid_envelopes(path: Path) -> None:
    for record in _stratus(path):
        event = _one(record)
        check_envelope(event)
        assert event.action == record["eventName"]
        assert event.id == cloudtrail.to_events(record, scope="corpus")[0].id  # deterministic
        assert redact(event.raw) == event.raw
        data = encode(event).decode()
        token = (record.get("responseElements") or {}).get("credentials", {}).get("sessionToken")
        if token:
            assert token not in data
        if record.get("requestID"):
            assert f"request:{record['requestID']}" in event.links
        key = (record.get("userIdentity") or {}).get("accessKeyId", "")
        assert (f"session:aws:{key}" in event.links) == key.startswith("ASIA")


def test_every_record_becomes_one_event_and_counts_per_type() -> None:
    counts: dict[str, Counter[str]] = {"stratus": Counter(), "otrf-json": Counter(), "otrf-csv": Counter()}
    ids: set[str] = set()
    identities: Counter[str] = Counter()
    for name, records in (
        ("stratus", [r for p in STRATUS_FILES for r in _stratus(p)]),
        ("otrf-json", _otrf()),
        ("otrf-csv", _csv()),
    ):
        for record in records:
            event = _one(record)
            if name != "stratus":
                check_envelope(event)
            counts[name][event.type] += 1
            identities[(record.get("userIdentity") or {}).get("type", "-")] += 1
            ids.add(event.id)
    total: Counter[str] = Counter()
    for name, c in counts.items():
        print_counts(f"cloudtrail {name}", c)
        total.update(c)
    print_counts("cloudtrail all", total)
    print("  userIdentity types:", dict(identities))

    assert len(STRATUS_FILES) == 35
    assert sum(counts["stratus"].values()) == 310
    assert sum(counts["otrf-json"].values()) == 103
    assert sum(counts["otrf-csv"].values()) == 301
    assert len(ids) == 310 + 103 + 301  # one id per eventID
    # PROVENANCE.md: userIdentity.type IAMUser 241, AssumedRole 68, FederatedUser 1 (Stratus);
    # OTRF JSON: IAMUser 87, AssumedRole 11, AWSService 5; the CSV rows are AWSAccount.
    assert identities == {
        "IAMUser": 241 + 87,
        "AssumedRole": 68 + 11,
        "FederatedUser": 1,
        "AWSService": 5,
        "AWSAccount": 301,
    }
    s = counts["stratus"]
    assert s["iam.login"] == 1
    assert s["iam.role.assumed"] == 12
    assert s["iam.federation_token.issued"] == 1
    assert (
        s["config.audit.disabled"] == 4
    )  # StopLogging, DeleteTrail, DeleteFlowLogs, DeleteResolverQueryLogConfig
    assert s["config.audit.changed"] == 1  # PutEventSelectors
    assert s["access.org.leave_organization"] == 1
    assert s["iam.user.created"] == 1 and s["iam.access_key.created"] == 2
    assert s["iam.login_profile.created"] == 1 and s["iam.login_profile.updated"] == 1
    assert s["iam.login_profile.deleted"] == 1
    assert s["aws.ssm.describe_instance_information.read"] == 112
    assert counts["otrf-json"]["iam.role.assumed"] == 5
    assert counts["otrf-csv"] == {
        "aws.s3.head_bucket.read": 159,
        "aws.s3.list_objects.read": 138,
        "aws.s3.put_object": 4,
    }


def test_reads_are_kept_and_marked() -> None:
    for record in [r for p in STRATUS_FILES for r in _stratus(p)] + _otrf():
        event = _one(record)
        name = record["eventName"]
        if name in ("AssumeRole", "ConsoleLogin"):
            assert not event.type.endswith(".read")
        elif record.get("readOnly") is True or (
            "readOnly" not in record and name.startswith(("Get", "List", "Describe"))
        ):
            assert event.type.endswith(".read"), (name, event.type)
        else:
            assert not event.type.endswith(".read"), (name, event.type)


def test_errors_are_failures_and_console_login_outcome() -> None:
    for record in [r for p in STRATUS_FILES for r in _stratus(p)]:
        event = _one(record)
        if record.get("errorCode"):
            assert event.outcome == "failure"
        elif record["eventName"] == "ConsoleLogin":
            assert record["responseElements"]["ConsoleLogin"] == "Success"
            assert event.outcome == "success" and event.actor.assurance == "authenticated"  # MFAUsed: No
        else:
            assert event.outcome == "success"


def test_role_sessions_of_the_samples_chain_to_their_assume_role() -> None:
    """Each successful AssumeRole issues a key; calls made with it share that session key."""
    records = [r for p in STRATUS_FILES for r in _stratus(p)] + _otrf()
    events = [_one(r) for r in records]
    issued = {e.subject: e for e in events if e.type == "iam.role.assumed" and e.outcome == "success"}
    assert len(issued) == 8 + 5  # Stratus: 4 of its 12 AssumeRole calls were denied
    used = 0
    for event in events:
        for key in event.links:
            if key.startswith("session:aws:") and key in issued and event.subject != key:
                used += 1
                steps = cloudtrail.resolve_origin(events, event)
                assert steps[-1]["actor"] == issued[key].actor.id
    assert used > 50


def test_otrf_mfa_console_user_is_human_with_mfa() -> None:
    events = [_one(r) for r in _otrf()]
    pedro = [e for e in events if e.actor.display == "pedro"]
    assert len(pedro) == 87
    assert {(e.actor.kind, e.actor.assurance) for e in pedro} == {("human", "mfa")}
    service = [e for e in events if e.actor.kind == "service"]
    assert {e.actor.id for e in service} >= {"aws-service:ec2.amazonaws.com"}


def test_honey_bucket_anonymous_callers_are_unverified() -> None:
    events = [_one(r) for r in _csv()]
    anonymous = [e for e in events if e.actor.id == "aws:anonymous"]
    assert len(anonymous) == 284
    assert all(e.actor.assurance == "none" and not e.actor.verified for e in anonymous)
    assert all(e.target.kind == "aws.s3.bucket" for e in events)
