"""The rules pre-filter index (pipeline.rules.prefilter): what it derives from a Sigma detection,
and that the engine matches exactly the same rules with the index on and off.

The differential part runs the built-in pack, the benchmark's generated rules and (when
``SIGMAHQ_RULES`` points at a SigmaHQ ``rules/`` checkout) the community rules of the four native
logsources over every sample event in ``../shared/data`` and over mutated copies of them (case
changes, values wrapped in lists, missing fields, numbers as strings and back, rule values
planted in random case).
"""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from sigma.rule import SigmaRule

from pipeline.rules.engine import Engine
from pipeline.rules.fields import Doc
from pipeline.rules.loader import RuleSet, load
from pipeline.rules.offline import read_events
from pipeline.rules.prefilter import Index, requirement, requirements

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"


def req(detection: dict[str, Any]) -> frozenset[tuple[str, str]] | None:
    return requirement(SigmaRule.from_dict({"title": "t", "logsource": {"product": "test"}, "detection": detection}))


def one(selection: Any, **more: Any) -> frozenset[tuple[str, str]] | None:
    return req({"selection": selection, "condition": "selection", **more})


# ------------------------------------------------------------------ what is derived


def test_plain_equality_requires_its_case_folded_value() -> None:
    assert one({"eventName": "StopLogging"}) == {("eventName", "stoplogging")}


def test_a_list_of_values_requires_any_of_them() -> None:
    assert one({"eventName": ["A", "b", "C"]}) == {("eventName", "a"), ("eventName", "b"), ("eventName", "c")}


def test_cased_values_index_their_lower_case_form() -> None:
    assert one({"eventName|cased": "StopLogging"}) == {("eventName", "stoplogging")}


@pytest.mark.parametrize("selection", [
    {"eventName": "Stop*"}, {"eventName": "Stop?ogging"}, {"eventName": ["StopLogging", "Delete*"]},
    {"eventName|contains": "Stop"}, {"eventName|startswith": "Stop"}, {"eventName|endswith": "Logging"},
    {"eventName|re": "^Stop"}, {"eventName|cased|contains": "Stop"}, {"sourceIPAddress|cidr": "10.0.0.0/8"},
    {"count": 5}, {"count|gte": 5}, {"readOnly": True}, {"eventName": None}, {"eventName|exists": True},
    {"eventName|fieldref": "other"},
])
def test_non_equality_values_derive_nothing(selection: dict[str, Any]) -> None:
    assert one(selection) is None


def test_escaped_wildcards_are_literal_text() -> None:
    assert one({"f": "a\\*b"}) == {("f", "a*b")}


def test_encoding_modifiers_index_the_encoded_text() -> None:
    assert one({"f|base64": "x"}) == {("f", "ea==")}


def test_and_needs_one_derivable_branch_and_keeps_the_smallest() -> None:
    r = one({"eventSource": "iam.amazonaws.com", "eventName": ["CreateUser", "DeleteUser"], "userAgent|contains": "x"})
    assert r == {("eventSource", "iam.amazonaws.com")}
    assert one({"userAgent|contains": "x", "eventName": ["A", "B"]}) == {("eventName", "a"), ("eventName", "b")}


def test_not_derives_nothing_but_its_sibling_does() -> None:
    assert req({"selection": {"a": "x"}, "filter": {"b": "y"}, "condition": "not filter"}) is None
    assert req({"selection": {"a": "x"}, "filter": {"b": "y"}, "condition": "selection and not filter"}) == {("a", "x")}
    assert req({"selection": {"a": "x"}, "filter": {"b": "y"}, "condition": "not (selection or filter)"}) is None


def test_one_of_needs_every_branch_derivable() -> None:
    both = {"sel_a": {"a": "x"}, "sel_b": {"b": "y"}, "condition": "1 of sel_*"}
    assert req(both) == {("a", "x"), ("b", "y")}
    mixed = {"sel_a": {"a": "x"}, "sel_b": {"b|contains": "y"}, "condition": "1 of sel_*"}
    assert req(mixed) is None
    assert req({**mixed, "condition": "all of sel_*"}) == {("a", "x")}
    assert req({**both, "condition": "1 of them"}) == {("a", "x"), ("b", "y")}


def test_or_between_selections_and_a_list_of_maps() -> None:
    assert req({"s": [{"a": "x"}, {"b": "y"}], "condition": "s"}) == {("a", "x"), ("b", "y")}
    assert req({"s": [{"a": "x"}, {"b|contains": "y"}], "condition": "s"}) is None
    assert req({"s": {"a": "x"}, "t": {"b": "y"}, "condition": "s or t"}) == {("a", "x"), ("b", "y")}


def test_keywords_derive_nothing() -> None:
    assert req({"keywords": ["evil"], "condition": "keywords"}) is None
    assert req({"keywords": ["evil"], "s": {"a": "x"}, "condition": "keywords and s"}) == {("a", "x")}


def test_all_modifier_and_dotted_paths() -> None:
    assert one({"f|all": ["A", "B"]}) in ({("f", "a")}, {("f", "b")})
    assert one({"objectRef.resource": "Secrets"}) == {("objectRef.resource", "secrets")}


# ------------------------------------------------------------------ the index itself


def test_index_keeps_rule_order_and_always_includes_rules_without_requirement() -> None:
    items = ["r0", "r1", "r2", "r3"]
    idx = Index(items, [(frozenset({("a", "x")}),), (), (frozenset({("b", "y"), ("a", "z")}),),
                        (frozenset({("c", "q")}),)])
    assert idx.candidates(Doc({"a": "X"})) == ["r0", "r1"]
    assert idx.candidates(Doc({"a": ["Z", "x"]})) == ["r0", "r1", "r2"]
    assert idx.candidates(Doc({"b": "Y", "c": "Q"})) == ["r1", "r2", "r3"]
    assert idx.candidates(Doc({})) == ["r1"]
    assert idx.candidates(Doc({"a": {"x": 1}})) == ["r1"]


def test_index_looks_values_up_as_the_predicates_see_them() -> None:
    idx = Index(["num", "obj", "list"], [(frozenset({("n", "5")}),), (frozenset({("o.k", "v")}),),
                                         (frozenset({("l.k", "w")}),)])
    assert idx.candidates(Doc({"n": 5})) == ["num"]  # a number compares as its decimal text
    assert idx.candidates(Doc({"o.k": "V"})) == ["obj"]  # a flat dotted key
    assert idx.candidates(Doc({"o": {"k": "v"}})) == ["obj"]
    assert idx.candidates(Doc({"l": [{"k": "x"}, {"k": "W"}]})) == ["list"]  # any element of a list


def test_index_prefers_the_field_most_rules_share() -> None:
    type_a, type_b = frozenset({("kind", "a")}), frozenset({("kind", "b")})
    outcome = frozenset({("outcome", "success")})
    idx = Index(["r0", "r1", "r2"], [(outcome, type_a), (type_b,), (frozenset({("kind", "c")}), outcome)])
    # indexed by kind, not by the smaller but shared-by-fewer outcome: an event of another kind skips all
    assert idx.candidates(Doc({"kind": "z", "outcome": "success"})) == []
    assert idx.candidates(Doc({"kind": "A", "outcome": "failure"})) == ["r0"]


def test_index_prefers_fields_that_name_what_happened() -> None:
    grant = frozenset({("type", "iam.user_policy.put"), ("target.kind", "k8s.rolebindings")})
    assurance = frozenset({("actor.assurance", "none"), ("actor.assurance", "claimed")})
    idx = Index(["grant"], [(assurance, grant)])
    assert idx.candidates(Doc({"type": "db.ddl", "actor": {"assurance": "none"}})) == []
    assert idx.candidates(Doc({"type": "IAM.user_policy.put"})) == ["grant"]


def test_alternatives_of_an_and() -> None:
    rule = SigmaRule.from_dict({"title": "t", "logsource": {"product": "test"}, "detection": {
        "s": {"type": ["a", "b"], "outcome": "success", "x|contains": "y"}, "condition": "s"}})
    assert set(requirements(rule)) == {frozenset({("type", "a"), ("type", "b")}), frozenset({("outcome", "success")})}


# ------------------------------------------------------------------ engine on vs off


def _engines(rs: RuleSet) -> tuple[Engine, Engine]:
    return Engine(rs, prefilter=True), Engine(rs, prefilter=False)


def _same(on: Engine, off: Engine, env: dict[str, Any]) -> None:
    for marks in (None, []):
        got = [d.meta.id for d in on.matching(env, marks)]
        want = [d.meta.id for d in off.matching(env, marks)]
        assert got == want, (env.get("id"), env.get("type"))


def _rules(tmp: Path, docs: list[dict[str, Any]]) -> RuleSet:
    f = tmp / "r.yml"
    f.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    rs = load([f], builtin=False)
    assert not rs.problems, [str(p) for p in rs.problems]
    return rs


def _env(raw: Any) -> dict[str, Any]:
    return {"id": "e1", "type": "cloud.api.call", "source": "cloudtrail://111/eu-west-1", "time": "2026-01-01T00:00:00Z",
            "raw": raw, "attributes": {"product": "aws", "service": "cloudtrail"}}


def test_engine_edge_cases_match_the_same_with_and_without_index(tmp_path: Path) -> None:
    ls = {"product": "aws", "service": "cloudtrail"}
    dets = [
        {"s": {"eventName": "StopLogging"}, "condition": "s"},
        {"s": {"eventName|cased": "StopLogging"}, "condition": "s"},
        {"s": {"eventName": "Stop*"}, "condition": "s"},
        {"s": {"eventName": "5"}, "condition": "s"},
        {"s": {"eventName": 5}, "condition": "s"},
        {"s": {"eventName": "StopLogging"}, "f": {"userAgent": "x"}, "condition": "s and not f"},
        {"s": {"eventName": "StopLogging"}, "condition": "not s"},
        {"s_a": {"eventName": "A"}, "s_b": {"eventSource|contains": "iam"}, "condition": "1 of s_*"},
        {"s": {"resources.type": "AWS::S3::Bucket"}, "condition": "s"},
        {"s": {"requestParameters.name": "x"}, "condition": "s"},
        {"k": ["stoplogging"], "condition": "k"},
    ]
    rs = _rules(tmp_path, [{"title": f"r{i}", "id": f"00000000-0000-4000-8000-{i:012d}", "logsource": ls,
                            "detection": d} for i, d in enumerate(dets)])
    on, off = _engines(rs)
    raws: list[Any] = [
        {"eventName": "StopLogging"}, {"eventName": "stoplogging"}, {"eventName": "STOPLOGGING", "userAgent": "X"},
        {"eventName": ["x", "StopLogging"]}, {"eventName": 5}, {"eventName": "5"}, {"eventName": "5.0"},
        {"eventName": 5.0}, {"eventName": " 5"}, {"eventName": None}, {}, {"eventName": {"a": 1}},
        {"eventName": "a", "eventSource": "IAM.amazonaws.com"}, {"eventName": "A"},
        {"resources": [{"type": "x"}, {"type": "aws::s3::bucket"}]}, {"resources.type": "AWS::S3::BUCKET"},
        {"requestParameters": {"name": "X"}}, {"requestParameters.name": ["y", "x"]}, {"eventName": True},
    ]
    hits = 0
    for raw in raws:
        _same(on, off, _env(raw))
        hits += len(off.matching(_env(raw)))
    assert hits > len(raws)  # the cases do match rules, so the comparison is not vacuous


# ------------------------------------------------------------------ differential over the sample


def _bench_rules() -> str:
    path = ROOT / "tests" / "bench" / "bench_rules.py"
    spec = importlib.util.spec_from_file_location("rperf_bench_rules", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text: str = mod.generated_rules(200)
    return text


def _mutate(value: Any, rnd: random.Random, plant: list[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if rnd.random() < 0.05:
                continue  # a missing field
            out[k] = _mutate(v, rnd, plant)
        return out
    if isinstance(value, list):
        return [_mutate(v, rnd, plant) for v in value]
    r = rnd.random()
    if isinstance(value, str):
        if r < 0.15 and plant:
            value = rnd.choice(plant)
        if r < 0.4:
            value = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in value)
        elif r < 0.5:
            return [value.upper(), "other"] if rnd.random() < 0.5 else ["other", value]
        elif r < 0.55 and value.strip().isdigit():
            return int(value)
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return str(value) if r < 0.5 else [value]
    return value


@pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data not found at {DATA} (expected ../shared/data)")
def test_index_on_and_off_match_identically_over_sample_and_mutations(tmp_path: Path) -> None:
    gen = tmp_path / "generated.yml"
    gen.write_text(_bench_rules())
    paths = [gen]
    if os.environ.get("SIGMAHQ_RULES"):
        root = Path(os.environ["SIGMAHQ_RULES"])
        paths += [root / p for p in ("cloud/aws/cloudtrail", "identity/okta", "application/github",
                                     "application/kubernetes/audit") if (root / p).is_dir()]
    rs = load(paths)
    assert not rs.problems, [str(p) for p in rs.problems[:5]]
    assert sum(bool(d.require) for d in rs.detections) > len(rs.detections) // 2
    on, off = _engines(rs)
    plant = sorted({t for d in rs.detections for r in d.require for _, t in r})
    events, _ = read_events([DATA])
    envs = [msgspec.to_builtins(e) for e in events]
    assert len(envs) > 1000
    rnd = random.Random(11)
    matched = 0
    for env in envs:
        _same(on, off, env)
        matched += bool(off.matching(env))
        _same(on, off, _mutate(env, rnd, plant))
    assert matched > 100  # rules do match the sample: the comparison covers real matches


# ------------------------------------------------------------------ shared lower-cased texts


@pytest.mark.parametrize("pattern", ["StopLogging", "Stop*", "*Logging", "*opLog*", "ΟΔΟΣ", "İx", "straße*", "5", "true",
                                     "a\\*b", "*{\"k\": 1}*"])
def test_lower_text_predicates_agree_with_the_scalar_tests(pattern: str) -> None:
    from sigma.types import SigmaString

    from pipeline.rules.compile import field_predicate, scalar_test

    value = SigmaString(pattern)
    fast, ref = field_predicate("f", value), scalar_test(value)
    texts = ["StopLogging", "stoplogging", "xSTOPLOGGING", "ΟΔΟΣ", "οδος", "οδοσ", "İx", "i̇x", "ix", "STRASSE",
             "straße1", "a*b", "aXb", "5", "TRUE"]
    values: list[Any] = [*texts, 5, 5.0, True, None, {"k": 1}, ["x", "StopLogging"], [{"k": 1}], []]
    for v in values:
        d = Doc({"f": v})
        assert fast(d) == any(ref(x) for x in d.scalars("f")), (pattern, v)
