"""``causelog rules validate`` and ``causelog rules test`` (offline, real CLI entry point)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.main import cli

RULE = """\
title: Trail stopped
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c31
logsource: {product: aws, service: cloudtrail}
detection:
    selection: {eventName: StopLogging}
    condition: selection
level: high
"""

RECORD = {
    "eventVersion": "1.08", "eventTime": "2026-11-27T01:00:00Z", "eventSource": "cloudtrail.amazonaws.com",
    "eventName": "StopLogging", "awsRegion": "eu-west-1", "eventID": "5b3f4a0e-1111-2222-3333-444455556666",
    "recipientAccountId": "111122223333", "sourceIPAddress": "203.0.113.7",
    "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice", "accountId": "111122223333",
                     "userName": "alice"},
    "requestParameters": {"name": "main"}, "responseElements": None,
}


def _run(args: list[str], tmp: Path) -> tuple[int, str, str]:
    runner = CliRunner()
    res = runner.invoke(cli, args, env={"CAUSELOG_HOME": str(tmp / "home"), "CAUSELOG_RULES": ""},
                        catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_validate_reports_bad_rules_and_exits_1(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.yml").write_text(RULE)
    (rules / "bad.yml").write_text(RULE.replace("eventName:", "eventName|nope:").replace("0c31", "0c32"))
    code, out, err = _run(["rules", "validate", str(rules), "--no-builtin"], tmp_path)
    assert code == 1
    assert "bad.yml: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c32: modifier:" in out and "nope" in out
    assert "1 rules loaded" in " ".join(err.split()) and "1 bad" in " ".join(err.split())
    code, out, _ = _run(["rules", "validate", str(rules), "--no-builtin", "--json"], tmp_path)
    (problem,) = json.loads(out)
    assert problem["feature"] == "modifier" and problem["file"].endswith("bad.yml")


def test_validate_the_builtin_pack_is_clean(tmp_path: Path) -> None:
    code, _, err = _run(["rules", "validate"], tmp_path)
    assert code == 0 and "0 bad" in " ".join(err.split())


def test_test_runs_rules_over_source_files_offline(tmp_path: Path) -> None:
    rules = tmp_path / "r.yml"
    rules.write_text(RULE)
    trail = tmp_path / "trail.json"
    trail.write_text(json.dumps({"Records": [RECORD, {**RECORD, "eventName": "StartLogging",
                                                       "eventID": "5b3f4a0e-1111-2222-3333-444455556667"}]}))
    code, out, err = _run(["rules", "test", str(rules), "--on", str(trail), "--json"], tmp_path)
    assert code == 0, err
    (alert,) = json.loads(out)
    assert alert["rule_id"] == "0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c31" and alert["level"] == "high"
    assert alert["time"] == "2026-11-27T01:00:00.000000Z" and len(alert["event_ids"]) == 1
    assert "2 events, 1 rules, 1 alerts" in " ".join(err.split())
    code, out, _ = _run(["rules", "test", str(rules), "--on", str(trail)], tmp_path)
    assert code == 0 and "Trail stopped" in out


def test_test_reports_unreadable_input_and_exits_1(tmp_path: Path) -> None:
    rules = tmp_path / "r.yml"
    rules.write_text(RULE)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"hello": "world"}))
    code, _, err = _run(["rules", "test", str(rules), "--on", str(odd)], tmp_path)
    assert code == 1 and "unknown format" in err
    code, _, err = _run(["rules", "test", str(tmp_path / "missing.yml"), "--on", str(odd)], tmp_path)
    assert code == 2 and "no such rule file" in " ".join(err.split()) and "Traceback" not in err


def test_test_needs_no_hash_key_installed_nor_creates_one(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A fresh process has no hasher installed (the test suite's conftest installs one): `rules
    test` must still read records whose normalizer hashes values, and must not write a deployment
    key as a side effect of an offline run."""
    from pipeline.sources import keyed

    monkeypatch.setattr(keyed, "_current", None)
    rules = tmp_path / "r.yml"
    rules.write_text(RULE)
    data = tmp_path / "trail.json"
    # A session token in the record: redaction hashes it under the installed key.
    record = {**RECORD, "responseElements": {"credentials": {"sessionToken": "FwoGZXIvYXdzEJr//////////wEaDM3k"}}}
    data.write_text(json.dumps({"Records": [record]}))
    code, out, err = _run(["rules", "test", str(rules), "--on", str(data), "--json"], tmp_path)
    assert code == 0, err
    (alert,) = json.loads(out)
    assert alert["rule_id"] == "0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c31"
    assert not list((tmp_path / "home").rglob("*key*"))
