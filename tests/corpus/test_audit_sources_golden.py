"""Golden envelopes of the IAM/audit and database sources: the exact canonical output for a
representative handful of real records (CloudTrail, Okta, GitHub audit log, PostgreSQL logs and
pgaudit, Debezium).

``tests/golden/<source>/<case>.json`` holds the list of ``to_dict`` envelopes the normalizer must
produce for that input. After an intended change, regenerate with::

    CAUSELOG_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/corpus/test_audit_sources_golden.py

and *read the diff*: a golden file is a reviewed statement of what is right (type, actor and
assurance, links, target, and that no literal or password is stored), not a snapshot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _audit_corpus import (
    CNPG_PASSWORDS,
    DEBEZIUM_DIR,
    GITHUB_AUDIT_FILE,
    OKTA_DIR,
    OTRF_CSV,
    OTRF_JSON,
    PGAUDIT_FILE,
    PGBADGER_DIR,
    STRATUS_DIR,
    missing,
    string_literals,
)
from _sources_corpus import DATA, GOLDEN, as_golden, check_envelope

from pipeline.model import Event, encode
from pipeline.sources import cloudtrail, debezium, github_audit, okta, postgres_log
from pipeline.sources.postgres_log import LogRecord

if _reason := missing(DATA):
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

UPDATE = os.environ.get("CAUSELOG_UPDATE_GOLDEN") == "1"
SOURCES = ("cloudtrail", "okta", "github_audit", "postgres", "debezium")


# --------------------------------------------------------------------------------------------
# CloudTrail


def _stratus(file: str, *names: str, ok_only: bool = False, first: bool = True) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        records = cloudtrail.iter_records(json.loads((STRATUS_DIR / file).read_text(encoding="utf-8")))
        picked: list[dict[str, Any]] = []
        for name in names:
            matches = [r for r in records if r["eventName"] == name and not (ok_only and r.get("errorCode"))]
            picked += matches[:1] if first else matches
        return [e for r in picked for e in cloudtrail.to_events(r, scope="acme")]

    return run


def _role_session_pair() -> list[Event]:
    """The AssumeRole that issued ASIANQQHHS551LWULIWD and the first call made with that key."""
    records = cloudtrail.iter_records(
        json.loads(
            (STRATUS_DIR / "aws.credential-access.ec2-get-password-data.json").read_text(encoding="utf-8")
        )
    )
    key = "ASIANQQHHS551LWULIWD"
    issue = next(
        r
        for r in records
        if (r.get("responseElements") or {}).get("credentials", {}).get("accessKeyId") == key
    )
    use = next(r for r in records if r["userIdentity"].get("accessKeyId") == key)
    return [e for r in (issue, use) for e in cloudtrail.to_events(r, scope="acme")]


def _otrf(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        for line in OTRF_JSON.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if predicate(record):
                return cloudtrail.to_events(record, scope="acme")
        raise AssertionError("no such record")

    return run


def _honey_bucket() -> list[Event]:
    rows = cloudtrail.records_from_csv(OTRF_CSV.read_text(encoding="utf-8"))
    put = next(r for r in rows if r["eventName"] == "PutObject")
    return [e for r in (rows[0], put) for e in cloudtrail.to_events(r, scope="acme")]


# --------------------------------------------------------------------------------------------
# Okta, GitHub audit


def _okta(file: str) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        lines = (OKTA_DIR / file).read_text(encoding="utf-8").splitlines()
        return [
            e
            for line in lines
            if line.strip()
            for e in okta.to_events(json.loads(line), scope="acme", org="example.okta.com")
        ]

    return run


def _github_audit(*actions: str) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        entries = list(github_audit.parse_lines(GITHUB_AUDIT_FILE.read_text(encoding="utf-8")))
        return [
            e
            for action in actions
            for e in github_audit.to_events(next(x for x in entries if x["action"] == action), scope="acme")
        ]

    return run


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _pg(
    file: str, predicate: Callable[[LogRecord], bool], limit: int = 1, server: str = "pg1"
) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        if file == "pgaudit.out":
            records = list(postgres_log.parse_pgaudit_transcript(PGAUDIT_FILE.read_text(encoding="utf-8")))
        else:
            records = list(postgres_log.fetch_records(PGBADGER_DIR / file))
        picked = [r for r in records if predicate(r)][:limit]
        assert picked, f"no record of {file} matches"
        events = [e for r in picked for e in postgres_log.to_events(r, scope="acme", server=server)]
        _assert_no_literal(picked, events)
        return events

    return run


def _assert_no_literal(records: list[LogRecord], events: list[Event]) -> None:
    data = "".join(encode(e).decode() for e in events)
    assert not any(p in data for p in CNPG_PASSWORDS)
    for record in records:
        originals = "\n".join(t for t in (record.message, record.query, record.detail) if t)
        for literal in string_literals(originals, min_length=3):
            normalized = " ".join(
                str((e.raw or {}).get("statement", {}).get("normalized", "")) for e in events
            )
            if literal in normalized or literal in ("postgres",):
                continue
            assert f"'{literal}'" not in data and literal not in data, literal


def _debezium(file: str) -> Callable[[], list[Event]]:
    def run() -> list[Event]:
        value = json.loads((DEBEZIUM_DIR / file).read_text(encoding="utf-8"))
        return debezium.to_events(value, scope="acme", topic="mysql-server-1.inventory.customers")

    return run


CASES: dict[str, Callable[[], list[Event]]] = {
    # CloudTrail
    "cloudtrail/console_login_without_mfa": _stratus(
        "aws.initial-access.console-login-without-mfa.json", "ConsoleLogin"
    ),
    "cloudtrail/assume_role_then_role_session_call": _role_session_pair,
    "cloudtrail/federation_token_then_federated_call": _stratus(
        "aws.persistence.sts-federation-token.json", "GetFederationToken", "GetCallerIdentity"
    ),
    "cloudtrail/stop_logging": _stratus("aws.defense-evasion.cloudtrail-stop.json", "StopLogging"),
    "cloudtrail/put_event_selectors": _stratus(
        "aws.defense-evasion.cloudtrail-event-selectors.json", "PutEventSelectors"
    ),
    "cloudtrail/leave_organization_denied": _stratus(
        "aws.defense-evasion.organizations-leave.json", "LeaveOrganization"
    ),
    "cloudtrail/create_admin_user": _stratus(
        "aws.persistence.iam-create-admin-user.json", "CreateUser", "AttachUserPolicy", "CreateAccessKey"
    ),
    "cloudtrail/get_secret_value_read": _stratus(
        "aws.credential-access.secretsmanager-retrieve-secrets.json", "GetSecretValue"
    ),
    "cloudtrail/otrf_mfa_user_describe": _otrf(lambda r: r["eventName"] == "DescribeInstances"),
    "cloudtrail/otrf_service_assume_role": _otrf(lambda r: r["eventName"] == "AssumeRole"),
    "cloudtrail/otrf_role_session_get_object": _otrf(lambda r: r["eventName"] == "GetObject"),
    "cloudtrail/honey_bucket_csv": _honey_bucket,
    # Okta
    "okta/head_3_lines": _okta("test-okta-system-events.head-3-lines.log"),
    "okta/tail_6_lines": _okta("test-okta-system-events.tail-6-lines.log"),
    # GitHub audit log
    "github_audit/access": _github_audit("team.add_member", "org.invite_member", "repo.add_member"),
    "github_audit/changes": _github_audit(
        "pull_request.create", "pull_request_review.submit", "pull_request.merge"
    ),
    "github_audit/config": _github_audit(
        "protected_branch.create",
        "protected_branch.rejected_ref_update",
        "repository_vulnerability_alerts.disable",
    ),
    "github_audit/repo_and_ci": _github_audit(
        "repo.create", "repo.transfer", "workflows.delete_workflow_run"
    ),
    # PostgreSQL
    "postgres/cnpg_alter_role_password": _pg("cnpg.log", lambda r: "PASSWORD" in r.message, limit=2),
    "postgres/cnpg_bootstrap_role_and_grant": _pg(
        "cnpg.log",
        lambda r: r.session_id == "6383b0f7.4e" and r.command_tag in ("CREATE ROLE", "GRANT"),
        limit=2,
    ),
    "postgres/cnpg_session": _pg("cnpg.log", lambda r: r.session_id == "6383b33a.258", limit=10),
    "postgres/cnpg_failed_delete": _pg(
        "cnpg.log", lambda r: r.severity == "ERROR" and r.command_tag == "DELETE"
    ),
    "postgres/csvlog_execute_with_parameters": _pg("anonymize.log", lambda r: True, limit=2),
    "postgres/csvlog_pg13_layout": _pg("csv_statement_without_duration.log", lambda r: True, limit=2),
    "postgres/stderr_negative_number": _pg("light.postgres.log", lambda r: "+ -4121" in r.message),
    "postgres/stderr_unicode_literal": _pg("stmt_type.log", lambda r: "UPDATE" in r.message),
    "postgres/stderr_error_with_statement": _pg(
        "queryid.log", lambda r: r.severity == "ERROR" and "work_mem" in r.message
    ),
    "postgres/cloudsql_session": _pg(
        "cloudsql.log", lambda r: r.pid == 202 and r.session_id is not None, limit=4
    ),
    "postgres/pgaudit_create_user_password": _pg(
        "pgaudit.out", lambda r: "CREATE USER regress_user1" in r.message
    ),
    "postgres/pgaudit_grant_multiline": _pg(
        "pgaudit.out", lambda r: "GRANT SELECT, INSERT, UPDATE, DELETE\n" in r.message
    ),
    "postgres/pgaudit_object_read": _pg(
        "pgaudit.out", lambda r: r.message.startswith("AUDIT: OBJECT,1,1,READ")
    ),
    "postgres/pgaudit_prepared_parameters": _pg(
        "pgaudit.out", lambda r: "long param suppressed" in r.message
    ),
    # Debezium
    "debezium/serde_with_schema": _debezium("serde-with-schema.json"),
    "debezium/serde_without_schema": _debezium("serde-without-schema.json"),
    "debezium/serde_update": _debezium("serde-update.json"),
    "debezium/serde_unknown_property": _debezium("serde-unknown-property.json"),
}


def _golden_path(case: str) -> Path:
    return GOLDEN / f"{case}.json"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    events = CASES[case]()
    assert events
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
    stray = {p for p in present if p.split("/", 1)[0] in SOURCES} - set(CASES)
    assert not stray, f"golden files without a case: {sorted(stray)}"


def test_postgres_golden_files_hold_no_literal_or_password() -> None:
    """Belt and braces over the reviewed files themselves: no password, and statements only in
    normalised form (no quote, no number) wherever a statement is shown."""
    for path in sorted((GOLDEN / "postgres").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert not any(p in text for p in CNPG_PASSWORDS), path
        for needle in ("'password", "'Washington'", "'America'", "forêt", "XXXXXXXX", "64KB", "md565cb1da"):
            assert needle not in text, (path.name, needle)
        for event in json.loads(text):
            statement = (event.get("raw") or {}).get("statement")
            if statement:
                assert "'" not in statement["normalized"] and "'" not in event["raw"]["message"]
