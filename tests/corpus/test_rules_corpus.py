"""Rules on the real sample data (../shared/data): Sigma rules in SigmaHQ's style on the native
records, the built-in pack on the whole sample (it fires on what it is for and nowhere else), and
one scenario per pack rule built from real records.

SigmaHQ's own rules are not shipped here (DRL licence); point ``SIGMAHQ_RULES`` at a checkout's
``rules/`` (cloud/aws/cloudtrail, identity/okta, application/github, application/kubernetes/audit)
and ``test_sigmahq_rules_load_and_run`` loads every one of them and runs them on the sample.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from _audit_corpus import PGBADGER_DIR, STRATUS_DIR
from _sources_corpus import DATA, GITHUB_DIR, K8S_DIR

from pipeline.correlate.offline import components
from pipeline.model import Event
from pipeline.rules.engine import Engine, Item, State
from pipeline.rules.loader import load
from pipeline.rules.offline import evaluate, read_events
from pipeline.sources import cloudtrail, github, k8s_audit

if not DATA.is_dir():
    pytest.skip(f"sample data not found at {DATA} (expected ../shared/data next to the repository)",
                allow_module_level=True)

pytestmark = pytest.mark.corpus

GRANT = "81d48bc4-e182-4fad-8f05-d594bf9a5eff"
AUDIT_OFF = "343884eb-16fc-43e7-8e75-17ac81186688"
PGAUDIT = "4d6becb0-dad5-4cee-afe7-4d44b566fcf0"
DEPLOY = "d9a89ab9-fd82-4c19-993c-8f16aa0eadbc"
CONFIG = "7f709990-4f5f-414a-959a-bc392e706df7"
DDL = "cfc4cfe8-803b-4b47-a229-99f6d79cd7d4"
SECRET_ROLE = "50bb70ae-238b-477e-84c4-b37ba82cd5ac"
SILENT = "633e2e76-8e3b-4467-84ad-e36e20a35b07"


@pytest.fixture(scope="module")
def sample() -> list[Event]:
    events, rejected = read_events([DATA])
    assert not rejected, rejected[:3]
    return events


@pytest.fixture(scope="module")
def pack() -> Engine:
    rs = load([])
    assert not rs.problems
    return Engine(rs)


def _by_id(events: list[Event]) -> dict[str, Event]:
    return {e.id: e for e in events}


# ------------------------------------------------------------------------------------------ Sigma


SIGMA_STYLE = """\
title: CloudTrail trail stopped or deleted
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1a01
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventSource: cloudtrail.amazonaws.com
        eventName: [StopLogging, DeleteTrail, UpdateTrail]
    condition: selection
---
title: Login profile changed for another user
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1a02
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventSource: iam.amazonaws.com
        eventName: [UpdateLoginProfile, CreateLoginProfile]
    filter_main_self:
        userIdentity.arn|fieldref|endswith: requestParameters.userName
    condition: selection and not 1 of filter_main_*
---
title: Console login without MFA
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1a03
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventName: ConsoleLogin
        additionalEventData.MFAUsed: 'No'
        responseElements.ConsoleLogin: Success
    condition: selection
---
title: Okta MFA verified via push
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1a04
logsource: {product: okta, service: okta}
detection:
    selection:
        eventType|startswith: user.authentication.auth_via
        outcome.result: SUCCESS
        target.type: User
    condition: selection
---
title: GitHub organization membership change
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1a05
logsource: {product: github, service: audit}
detection:
    selection:
        action: [org.add_member, org.invite_member]
    condition: selection
---
title: Kubernetes cluster role binding created
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1a06
logsource: {product: kubernetes, service: audit}
detection:
    selection:
        verb: create
        objectRef.resource|endswith: rolebindings
        objectRef.apiGroup: rbac.authorization.k8s.io
    condition: selection
---
title: Kubernetes exec into a pod
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1a07
logsource: {product: kubernetes, service: audit}
detection:
    selection:
        objectRef.subresource: [exec, attach]
    condition: selection
---
title: Deployment deleted (SigmaHQ's logsource, with its generic category)
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1a08
logsource:
    category: application
    product: kubernetes
    service: audit
detection:
    selection:
        verb: delete
        objectRef.resource: deployments
    condition: selection
"""


def _raw_count(events: list[Event], kind: str, test: Any) -> int:
    return sum(1 for e in events if e.source.startswith(kind) and test(e.raw))


def test_sigma_rules_on_native_records_match_exactly_the_records_they_describe(tmp_path: Path,
                                                                                 sample: list[Event]) -> None:
    (tmp_path / "r.yml").write_text(SIGMA_STYLE)
    rs = load([tmp_path], builtin=False)
    assert not rs.problems
    engine = Engine(rs)
    got: Counter[str] = Counter()
    for e in sample:
        for d in engine.matching(msgspec.to_builtins(e)):
            got[d.meta.id[-2:]] += 1
    # The expectations are counted straight from the raw records, field by field.
    expected = {
        "01": _raw_count(sample, "cloudtrail", lambda r: r.get("eventSource") == "cloudtrail.amazonaws.com"
                         and r.get("eventName") in ("StopLogging", "DeleteTrail", "UpdateTrail")),
        "02": _raw_count(sample, "cloudtrail", lambda r: r.get("eventName") in ("UpdateLoginProfile",
                                                                              "CreateLoginProfile")
                         and not str(r["userIdentity"].get("arn", "")).lower().endswith(
                             str((r.get("requestParameters") or {}).get("userName", "\0")).lower())),
        "03": _raw_count(sample, "cloudtrail", lambda r: r.get("eventName") == "ConsoleLogin"
                         and (r.get("additionalEventData") or {}).get("MFAUsed") == "No"
                         and (r.get("responseElements") or {}).get("ConsoleLogin") == "Success"),
        "04": _raw_count(sample, "okta", lambda r: r["eventType"].startswith("user.authentication.auth_via")
                         and r["outcome"]["result"] == "SUCCESS"
                         and any(t.get("type") == "User" for t in r.get("target") or [])),
        "05": _raw_count(sample, "github-audit", lambda r: r["action"] in ("org.add_member", "org.invite_member")),
        "06": _raw_count(sample, "k8s-audit", lambda r: r.get("verb") == "create"
                         and r["objectRef"]["resource"].endswith("rolebindings")
                         and r["objectRef"].get("apiGroup") == "rbac.authorization.k8s.io"),
        "07": _raw_count(sample, "k8s-audit", lambda r: (r.get("objectRef") or {}).get("subresource")
                         in ("exec", "attach")),
        "08": _raw_count(sample, "k8s-audit", lambda r: r.get("verb") == "delete"
                         and (r.get("objectRef") or {}).get("resource") == "deployments"),
    }
    assert {k: v for k, v in expected.items() if v} == dict(got)
    assert expected["01"] == 2 and expected["03"] == 1 and expected["05"] == 13 and expected["07"] == 2
    assert expected["08"] == 1
    assert expected["04"] >= 1 and expected["06"] == 2 and expected["02"] == 2


@pytest.mark.skipif(not os.environ.get("SIGMAHQ_RULES"), reason="SIGMAHQ_RULES (a SigmaHQ rules/ checkout) not set")
def test_sigmahq_rules_load_and_run(sample: list[Event]) -> None:
    root = Path(os.environ["SIGMAHQ_RULES"])
    dirs = [root / "cloud" / "aws" / "cloudtrail", root / "identity" / "okta", root / "application" / "github",
            root / "application" / "kubernetes" / "audit"]
    rs = load([d for d in dirs if d.is_dir()], builtin=False)
    assert not rs.problems, [str(p) for p in rs.problems]
    assert len(rs.detections) > 80
    alerts = evaluate(Engine(rs), sample)
    assert alerts  # the sample holds StopLogging, DeleteTrail, org.add_member ...


# ------------------------------------------------------------------------------------------ pack


def _changes_pgaudit_setting(e: Event) -> bool:
    statement = e.raw.get("statement") if isinstance(e.raw, dict) else None
    text = " ".join(str((statement or {}).get("normalized", "")).lower().split())
    return text.startswith(("set pgaudit.", "reset pgaudit.")) or (
        text.startswith("alter ") and (" set pgaudit." in text or " reset pgaudit." in text))


def test_builtin_pack_on_the_whole_sample_fires_only_on_its_true_positives(sample: list[Event], pack: Engine) -> None:
    alerts = evaluate(pack, sample)
    events = _by_id(sample)
    fired = Counter((a.rule_id, events[a.event_ids[0]].type, events[a.event_ids[0]].action) for a in alerts)
    pgaudit_changes = [e for e in sample if _changes_pgaudit_setting(e)]
    db_grants = [e for e in sample if e.type == "access.db.grant" and e.outcome != "failure"]
    assert len(pgaudit_changes) == 60 and len(db_grants) == 13
    expected = Counter({
        # stratus-red-team detonations: trail deleted and trail stopped
        (AUDIT_OFF, "config.audit.disabled", "DeleteTrail"): 1,
        (AUDIT_OFF, "config.audit.disabled", "StopLogging"): 1,
        # privilege grants by actors proven below MFA: IAM policies (stratus), cluster role bindings
        # (falco), GRANTs in the CloudNativePG log and in pgaudit's regression transcript
        (GRANT, "iam.user_policy.attached", "AttachUserPolicy"): 1,
        (GRANT, "iam.role_policy.attached", "AttachRolePolicy"): 1,
        (GRANT, "access.rbac.create", "create"): 2,
        (GRANT, "access.db.grant", "grant"): len(db_grants),
        # octokit's deployment of f95f852 to production: its chain has no review at all
        (DEPLOY, "deploy.succeeded", "deploy"): 2,
    })
    # pgaudit's regression test changes pgaudit.* settings 60 times (SET, ALTER ROLE ... SET/RESET)
    for e in pgaudit_changes:
        expected[(PGAUDIT, e.type, e.action)] += 1
    assert fired == expected
    grants = [events[a.event_ids[0]] for a in alerts if a.rule_id == GRANT]
    assert all(e.actor.assurance in ("none", "claimed", "authenticated") for e in grants)
    assert {a.event_ids[0] for a in alerts if a.rule_id == PGAUDIT} == {e.id for e in pgaudit_changes}


def test_pack_alert_ids_are_stable_across_runs(sample: list[Event], pack: Engine) -> None:
    first = [a.id for a in evaluate(pack, sample)]
    assert first == [a.id for a in evaluate(pack, list(reversed(sample)))]
    assert len(set(first)) == len(first)


def test_deploy_with_an_approved_review_in_its_chain_is_silent(pack: Engine) -> None:
    review = orjson.loads((GITHUB_DIR / "pull_request_review" / "submitted.payload.json").read_bytes())
    review["review"]["state"] = "approved"
    status = orjson.loads((GITHUB_DIR / "deployment_status" / "payload.json").read_bytes())
    approved = github.to_events(review, event_name="pull_request_review", scope="s")[0]
    deployed = github.to_events(status, event_name="deployment_status", scope="s")[0]
    assert approved.type == "change.reviewed" and approved.action == "approved"
    # The review predates the deploy and the two share a chain (as a merge commit would link them).
    items = [Item(event=msgspec.to_builtins(approved), chain_id="c"),
             Item(event=msgspec.to_builtins(deployed), chain_id="c")]
    assert [a.rule_id for a in _run(pack, items)] == []
    alone = [Item(event=msgspec.to_builtins(deployed), chain_id="d")]
    assert [a.rule_id for a in _run(pack, alone)] == [DEPLOY]


def _run(engine: Engine, items: list[Item], flush: bool = False) -> list[Any]:
    from pipeline.rules.engine import time_us

    state, out = State(), []
    wm = 0
    for it in sorted(items, key=lambda i: time_us(i.event["time"])):
        wm = max(wm, time_us(it.event["time"]))
        state, alerts = engine.step(state, it, wm)
        out.extend(alerts)
    if flush:
        out.extend(engine.advance(state, 2**61)[1])
    return out


def test_config_change_to_a_production_cluster_without_links(pack: Engine) -> None:
    path = K8S_DIR / "create_configmap.json"
    record = orjson.loads(path.read_bytes())
    prod = k8s_audit.to_events(record, scope="s", cluster="prod-eu")
    dev = k8s_audit.to_events(record, scope="s", cluster="dev-eu")
    assert prod[0].type == "config.changed"
    assert [a.rule_id for a in _run(pack, [Item(event=msgspec.to_builtins(e)) for e in prod])] == [CONFIG]
    assert _run(pack, [Item(event=msgspec.to_builtins(e)) for e in dev]) == []
    linked = msgspec.to_builtins(prod[0])
    linked["links"] = [*linked["links"], "commit:9fceb02d0ae598e95dc970b74767f19372d61af8"]
    assert _run(pack, [Item(event=linked)]) == []


def test_ddl_on_a_production_database_outside_a_deploy_chain(pack: Engine) -> None:
    cnpg = PGBADGER_DIR / "cnpg.log"
    prod, _ = read_events([cnpg], kind="postgres-log", server="prod-orders")
    test, _ = read_events([cnpg], kind="postgres-log", server="offline")
    n_ddl = sum(e.type == "db.ddl" and e.outcome == "success" for e in prod)
    assert n_ddl == 2  # create table states, create table countries (a third one failed: no alert)
    assert Counter(a.rule_id for a in evaluate(pack, prod))[DDL] == n_ddl
    assert Counter(a.rule_id for a in evaluate(pack, test))[DDL] == 0
    # the same DDL inside a deploy's chain is no alert
    ddl = next(e for e in prod if e.type == "db.ddl")
    deploy = msgspec.to_builtins(ddl) | {"id": "dep1", "type": "deploy.succeeded", "action": "deploy"}
    deploy["time"] = "2022-11-27T00:00:00Z"
    items = [Item(event=deploy, chain_id="c"), Item(event=msgspec.to_builtins(ddl), chain_id="c")]
    assert DDL not in [a.rule_id for a in _run(pack, items)]


def test_pgaudit_setting_changed(tmp_path: Path, pack: Engine) -> None:
    line = next(x for x in (PGBADGER_DIR / "cnpg.log").read_text().splitlines() if "statement: create table" in x)
    rec = orjson.loads(line)
    rec["record"]["message"] = "statement: ALTER SYSTEM SET pgaudit.log = 'none'"
    rec["record"]["command_tag"] = "ALTER SYSTEM"
    other = copy.deepcopy(rec)
    other["record"]["message"] = "statement: SET work_mem = '64MB'"
    other["record"]["command_tag"] = "SET"
    other["record"]["session_line_num"] = str(int(rec["record"]["session_line_num"]) + 1)
    log = tmp_path / "pg.log"
    log.write_bytes(orjson.dumps(rec) + b"\n" + orjson.dumps(other) + b"\n")
    events, rejected = read_events([log], kind="postgres-log", server="pg1")
    assert not rejected and len(events) == 2
    assert [a.rule_id for a in evaluate(pack, events)] == [PGAUDIT]


def test_secret_read_then_role_assumed_within_ten_minutes(pack: Engine) -> None:
    def records(name: str) -> list[dict]:
        return cloudtrail.iter_records(orjson.loads((STRATUS_DIR / name).read_bytes()))

    secret = next(r for r in records("aws.credential-access.secretsmanager-retrieve-secrets.json")
                  if r["eventName"] == "GetSecretValue" and not r.get("errorCode"))
    assume = next(r for r in records("aws.credential-access.ec2-get-password-data.json")
                  if r["eventName"] == "AssumeRole" and not r.get("errorCode"))

    def at(record: dict, when: str) -> dict:
        event = cloudtrail.to_events(record | {"eventTime": when}, scope="s")[0]
        return msgspec.to_builtins(event)

    near = [Item(event=at(secret, "2024-08-01T10:00:00Z"), person="christophe"),
            Item(event=at(assume, "2024-08-01T10:06:00Z"), person="christophe")]
    (alert,) = [a for a in _run(pack, near) if a.rule_id == SECRET_ROLE]
    assert alert.person == "christophe" and len(alert.event_ids) == 2
    far = [Item(event=at(secret, "2024-08-01T10:00:00Z"), person="christophe"),
           Item(event=at(assume, "2024-08-01T10:16:00Z"), person="christophe")]
    assert SECRET_ROLE not in [a.rule_id for a in _run(pack, far)]
    other = [Item(event=at(secret, "2024-08-01T10:00:00Z"), person="christophe"),
             Item(event=at(assume, "2024-08-01T10:06:00Z"), person="someone-else")]
    assert SECRET_ROLE not in [a.rule_id for a in _run(pack, other)]


def test_source_silent_for_fifteen_minutes(pack: Engine) -> None:
    from _audit_corpus import OTRF_JSON

    lines = OTRF_JSON.read_bytes().splitlines()
    records = [r for line in lines if line.strip() for r in cloudtrail.iter_records(orjson.loads(line))][:40]
    # The OTRF capture lasts 29 minutes; spread 40 of its records over two hours (one every 3 min).
    items = []
    for i, r in enumerate(records):
        t = f"2020-09-14T{i * 3 // 60:02d}:{i * 3 % 60:02d}:00Z"
        items.append(Item(event=msgspec.to_builtins(cloudtrail.to_events(r | {"eventTime": t}, scope="s")[0])))
    k8s = orjson.loads((K8S_DIR / "create_configmap.json").read_bytes())
    later = msgspec.to_builtins(k8s_audit.to_events(k8s, scope="s")[0]) | {"time": "2020-09-14T02:30:00Z"}
    quiet = [a for a in _run(pack, [*items, Item(event=later)]) if a.rule_id == SILENT]
    assert len(quiet) == 1 and quiet[0].group["source"].startswith("cloudtrail://")
    assert quiet[0].window_start == "2020-09-14T01:57:00.000000Z"
    # the real capture alone (29 minutes, then nothing) is too short a history to call it silent
    assert [a for a in evaluate(pack, read_events([OTRF_JSON])[0], flush=True) if a.rule_id == SILENT] == []


def test_offline_chains_come_from_the_correlation(sample: list[Event]) -> None:
    chains = components(sorted(sample, key=lambda e: (e.time, e.id)))
    assert len(set(chains.values())) < len(chains)  # some events share chains
