"""Loading rules: the built-in pack, CAUSELOG_RULES directories, and the report of bad rules."""

from __future__ import annotations

from pathlib import Path

from pipeline.rules.fields import Doc
from pipeline.rules.loader import PACK_DIR, load, rule_dirs

GOOD = """\
title: Trail stopped
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c01
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventName: StopLogging
    condition: selection
level: high
tags: [attack.defense-impairment]
"""


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_builtin_pack_loads_without_problems() -> None:
    rs = load([])
    assert not rs.problems, [str(p) for p in rs.problems]
    assert len(rs.detections) >= 7 and rs.correlations and rs.silences
    assert all(f.startswith(str(PACK_DIR)) for f in rs.files)


def test_rule_dirs_are_colon_separated_and_read_recursively(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "deep" / "x", "one.yml", GOOD)
    _write(tmp_path / "b", "two.yaml", GOOD.replace("0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c01",
                                                    "0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c02"))
    _write(tmp_path / "b", "notes.txt", "not a rule")
    dirs = rule_dirs(f"{tmp_path / 'a'}::{tmp_path / 'b'}")
    rs = load(dirs, builtin=False)
    assert sorted(d.meta.id[-2:] for d in rs.detections) == ["01", "02"]
    assert not rs.problems
    d = rs.detections[0]
    assert d.logsource == ("aws", "cloudtrail", None) and d.meta.level == "high"
    assert d.meta.tags == ("attack.defense-impairment",)
    assert d.predicate(Doc({"eventName": "stoplogging"}))


def test_each_bad_rule_is_reported_with_file_id_and_feature_and_the_rest_load(tmp_path: Path) -> None:
    _write(tmp_path, "good.yml", GOOD)
    _write(tmp_path, "modifier.yml", GOOD.replace("eventName:", "eventName|frobnicate:")
           .replace("0c01", "0c03"))
    _write(tmp_path, "notuuid.yml", GOOD.replace("0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c01", "not-a-uuid"))
    _write(tmp_path, "broken.yml", "title: [unclosed\n")
    _write(tmp_path, "placeholder.yml", GOOD.replace("eventName: StopLogging", "eventName|expand: '%admins%'")
           .replace("0c01", "0c04"))
    _write(tmp_path, "condition.yml", GOOD.replace("condition: selection", "condition: selection and nope")
           .replace("0c01", "0c05"))
    _write(tmp_path, "corr.yml", """\
title: Many stops
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c06
correlation:
    type: event_count
    rules: [no_such_rule]
    group-by: [recipientAccountId]
    timespan: 5m
    condition: {gte: 3}
""")
    rs = load([tmp_path], builtin=False)
    assert [d.meta.id for d in rs.detections] == ["0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c01"]
    by_file = {Path(p.file).name: p for p in rs.problems}
    assert set(by_file) == {"modifier.yml", "notuuid.yml", "broken.yml", "placeholder.yml", "condition.yml",
                            "corr.yml"}
    assert by_file["modifier.yml"].rule.endswith("0c03") and by_file["modifier.yml"].feature == "modifier"
    assert "frobnicate" in by_file["modifier.yml"].message
    assert by_file["notuuid.yml"].feature == "identifier" and by_file["notuuid.yml"].rule == "not-a-uuid"
    assert by_file["broken.yml"].feature == "yaml"
    assert by_file["placeholder.yml"].feature == "expand" and "%admins%" in by_file["placeholder.yml"].message
    assert by_file["condition.yml"].feature == "condition" and "nope" in by_file["condition.yml"].message
    assert by_file["corr.yml"].feature == "rules" and "no_such_rule" in by_file["corr.yml"].message


def test_assurance_comparison_is_rewritten_to_the_levels_it_admits(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", """\
title: below mfa
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c10
logsource: {product: causelog}
detection:
    selection:
        type: access.db.grant
        actor.assurance: {lt: mfa}
    condition: selection
""")
    rs = load([tmp_path], builtin=False)
    pred = rs.detections[0].predicate
    for level, fires in [("none", True), ("claimed", True), ("authenticated", True), ("mfa", False),
                         ("signed", False)]:
        assert pred(Doc({"type": "access.db.grant", "actor": {"assurance": level}})) is fires, level


def test_bad_assurance_level_is_a_problem(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", """\
title: bad
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c11
logsource: {product: causelog}
detection:
    selection:
        actor.assurance: {lt: superuser}
    condition: selection
""")
    rs = load([tmp_path], builtin=False)
    assert not rs.detections and rs.problems[0].feature == "assurance"


def test_correlation_references_by_name_range_condition_aliases_and_generate(tmp_path: Path) -> None:
    _write(tmp_path, "c.yml", """\
title: failed login
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c20
name: failed_login
logsource: {product: okta, service: okta}
detection:
    selection: {eventType: user.session.start, outcome.result: FAILURE}
    condition: selection
---
title: brute force
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c21
correlation:
    type: event_count
    rules: [failed_login]
    group-by: [user]
    aliases:
        user:
            failed_login: actor.alternateId
    timespan: 10m
    condition: {gt: 3, lte: 10}
level: high
""")
    rs = load([tmp_path], builtin=False)
    assert not rs.problems, [str(p) for p in rs.problems]
    (c,) = rs.correlations
    assert c.rules == ("0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c20",)
    assert c.conditions == (("gt", 3.0), ("lte", 10.0)) and c.closing
    assert c.aliases == {"user": {"0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c20": "actor.alternateId"}}
    assert c.timespan_us == 600_000_000
    assert rs.detections[0].alerts is False  # generate: false (default)


def test_absence_and_silence_rules(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", """\
title: schema change without deploy
id: schema-no-deploy
logsource: {product: causelog}
absence:
    after: {type: db.ddl}
    expect: {type|startswith: deploy.}
    join: [target.service]
    within: 30m
level: high
---
title: quiet
id: quiet
silence: {source: 'cloudtrail://*', for: 15m, min_events: 5}
---
title: broken absence
id: broken
absence: {after: {type: db.ddl}}
""")
    rs = load([tmp_path], builtin=False)
    (a,) = rs.absences
    assert a.join == ("target.service",) and a.within_us == 1_800_000_000
    assert a.after.predicate(Doc({"type": "db.ddl"})) and a.expect.predicate(Doc({"type": "deploy.succeeded"}))
    (s,) = rs.silences
    assert s.min_events == 5 and s.for_us == 900_000_000 and s.baseline_us == 4 * s.for_us
    (p,) = rs.problems
    assert p.rule == "broken" and p.feature == "absence" and "expect" in p.message


def test_global_action_collections_and_duplicate_ids(tmp_path: Path) -> None:
    _write(tmp_path, "g.yml", """\
action: global
title: trail changes
logsource: {product: aws, service: cloudtrail}
detection:
    condition: selection
---
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1b01
detection:
    selection: {eventName: StopLogging}
---
id: 6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1b02
detection:
    selection: {eventName: DeleteTrail}
""")
    _write(tmp_path, "dup.yml", GOOD.replace("0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c01",
                                             "6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1b02"))
    rs = load([tmp_path], builtin=False)
    by_id = {d.meta.id: d for d in rs.detections if d.meta.file.endswith("g.yml")}
    assert by_id["6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1b01"].predicate(Doc({"eventName": "StopLogging"}))
    assert by_id["6f3f8a52-3b0e-4a0e-9d47-1b2f1d6c1b02"].predicate(Doc({"eventName": "DeleteTrail"}))
    (p,) = rs.problems
    assert p.feature == "id" and p.rule.endswith("1b02") and "also defined in" in p.message
