"""Sigma evaluation semantics, case by case from the Sigma specification (rules spec, modifiers
appendix). Each test states the rule and the records that must and must not match."""

from __future__ import annotations

import base64

import pytest
from rules_helpers import matcher, sel


def test_string_equality_is_case_insensitive_and_whole_value() -> None:
    m = sel({"eventName": "StopLogging"})
    assert m({"eventName": "stoplogging"})
    assert m({"eventName": "STOPLOGGING"})
    assert not m({"eventName": "StopLoggingNow"})
    assert not m({"eventName": "xStopLogging"})
    assert not m({})


def test_cased_modifier_compares_case_sensitively() -> None:
    m = sel({"eventName|cased": "StopLogging"})
    assert m({"eventName": "StopLogging"})
    assert not m({"eventName": "stoplogging"})
    w = sel({"eventName|cased|startswith": "Stop"})
    assert w({"eventName": "StopX"}) and not w({"eventName": "stopX"})


def test_wildcards_star_and_question_mark() -> None:
    m = sel({"f": "prog?.exe"})
    assert m({"f": "progA.exe"}) and m({"f": "PROGb.EXE"})
    assert not m({"f": "prog.exe"}) and not m({"f": "progAB.exe"})
    s = sel({"f": "antivirus_V*.exe"})
    assert s({"f": "antivirus_V1.exe"}) and s({"f": "antivirus_V21.2.1.exe"}) and s({"f": "antivirus_V.exe"})
    assert not s({"f": "antivirus_V1.exe.bak"})
    multi = sel({"f": "a*b*c"})
    assert multi({"f": "a\nxx b yy c"})  # * spans newlines
    assert not multi({"f": "a b"})


def test_escaped_wildcards_and_backslashes() -> None:
    star = sel({"f": r"a\*b"})
    assert star({"f": "a*b"}) and not star({"f": "axxb"})
    q = sel({"f": r"what\?"})
    assert q({"f": "what?"}) and not q({"f": "whats"})
    plain = sel({"f": r"C:\Windows\x"})  # a lone backslash before a normal character is literal
    assert plain({"f": "c:\\windows\\X"})
    double = sel({"f": r"a\\*"})  # escaped backslash, then a real wildcard
    assert double({"f": "a\\anything"}) and not double({"f": "anything"})


def test_contains_startswith_endswith() -> None:
    c = sel({"userAgent|contains": "S3 Browser"})
    assert c({"userAgent": "x s3 browser 9.1"}) and not c({"userAgent": "S3Browser"})
    s = sel({"f|startswith": "arn:aws:iam::"})
    assert s({"f": "ARN:AWS:IAM::1:user/a"}) and not s({"f": "x arn:aws:iam::"})
    e = sel({"f|endswith": "/admin"})
    assert e({"f": "arn:role/ADMIN"}) and not e({"f": "/admin/x"})


def test_list_of_values_is_any_and_all_modifier_is_every() -> None:
    anyv = sel({"eventName": ["StopLogging", "DeleteTrail", "UpdateTrail"]})
    assert anyv({"eventName": "deletetrail"}) and not anyv({"eventName": "CreateTrail"})
    allv = sel({"cmd|contains|all": ["-enc", "hidden"]})
    assert allv({"cmd": "x -ENC y -w HIDDEN"})
    assert not allv({"cmd": "x -enc y"})


def test_regular_expression_is_case_sensitive_search_with_flags() -> None:
    r = sel({"arn|re": ".+:assumed-role/aws:.+"})
    assert r({"arn": "arn:aws:sts::1:assumed-role/aws:ec2-instance/i-1"})
    assert not r({"arn": "arn:aws:sts::1:ASSUMED-ROLE/aws:x"})
    unanchored = sel({"f|re": "b+"})
    assert unanchored({"f": "abbbc"})
    i = sel({"f|re|i": "^admin$"})
    assert i({"f": "ADMIN"})
    m = sel({"f|re|m": "^two$"})
    assert m({"f": "one\ntwo\nthree"}) and not sel({"f|re": "^two$"})({"f": "one\ntwo\nthree"})
    s = sel({"f|re|s": "a.b"})
    assert s({"f": "a\nb"}) and not sel({"f|re": "a.b"})({"f": "a\nb"})


def test_cidr() -> None:
    m = sel({"sourceIPAddress|cidr": ["10.0.0.0/8", "2001:db8::/32"]})
    assert m({"sourceIPAddress": "10.1.2.3"}) and m({"sourceIPAddress": "2001:db8::1"})
    assert not m({"sourceIPAddress": "11.0.0.1"})
    assert not m({"sourceIPAddress": "AWS Internal"})


def test_base64_base64offset_and_utf16() -> None:
    b = sel({"f|base64": "secret"})
    assert b({"f": base64.b64encode(b"secret").decode()})
    assert not b({"f": "secret"})
    off = sel({"f|base64offset|contains": "http://"})
    for prefix in (b"", b"a", b"ab"):
        encoded = base64.b64encode(prefix + b"http://evil").decode()
        assert off({"f": encoded}), prefix
    wide = sel({"f|wide|base64offset|contains": "ping"})
    assert wide({"f": base64.b64encode("x ping y".encode("utf-16-le")).decode()})
    be = sel({"f|utf16be|base64": "cmd"})
    assert be({"f": base64.b64encode("cmd".encode("utf-16-be")).decode()})
    le = sel({"f|utf16le|base64": "cmd"})
    assert le({"f": base64.b64encode("cmd".encode("utf-16-le")).decode()})


def test_windash_matches_every_dash_variant() -> None:
    m = sel({"cmd|windash|contains": "-exec"})
    for dash in ("-", "/", "\u2013", "\u2014", "\u2015"):
        assert m({"cmd": f"tool {dash}exec x"}), dash
    assert not m({"cmd": "tool exec"})


def test_numeric_comparisons_and_numbers_versus_strings() -> None:
    gt = sel({"code|gt": 400})
    assert gt({"code": 403}) and gt({"code": "500"}) and not gt({"code": 400}) and not gt({"code": "abc"})
    assert sel({"code|gte": 400})({"code": 400})
    assert sel({"code|lt": 1.5})({"code": 1}) and not sel({"code|lt": 1.5})({"code": 2})
    assert sel({"code|lte": 3})({"code": "3"})
    eq = sel({"responseStatus.code": 403})
    assert eq({"responseStatus": {"code": 403}}) and eq({"responseStatus": {"code": "403"}})
    assert not eq({"responseStatus": {"code": 404}})
    as_text = sel({"code": "403"})
    assert as_text({"code": 403})
    assert not sel({"flag|gt": 0})({"flag": True})  # booleans are not numbers


def test_booleans_match_json_booleans_and_their_spelling() -> None:
    m = sel({"securityContext.isProxy": "true"})
    assert m({"securityContext": {"isProxy": True}})
    assert m({"securityContext": {"isProxy": "TRUE"}})
    assert not m({"securityContext": {"isProxy": False}})
    assert not m({"securityContext": {"isProxy": None}})
    b = sel({"enabled": False})
    assert b({"enabled": False}) and b({"enabled": "false"}) and not b({"enabled": 0})


def test_null_matches_missing_or_json_null_only() -> None:
    m = sel({"errorCode": None})
    assert m({}) and m({"errorCode": None})
    assert not m({"errorCode": ""}) and not m({"errorCode": "AccessDenied"})
    n = matcher({"selection": {"a": 1}, "filter": {"errorCode": None}, "condition": "selection and not filter"})
    assert n({"a": 1, "errorCode": "Denied"}) and not n({"a": 1})


def test_empty_string_is_a_value_not_a_missing_field() -> None:
    m = sel({"f": ""})
    assert m({"f": ""}) and not m({}) and not m({"f": None})


def test_exists_checks_presence_only() -> None:
    yes = sel({"errorMessage|exists": True})
    assert yes({"errorMessage": None}) and yes({"errorMessage": ""}) and yes({"errorMessage": []})
    assert not yes({})
    no = sel({"errorMessage|exists": False})
    assert no({}) and not no({"errorMessage": "x"})


def test_fieldref_compares_with_another_field() -> None:
    m = sel({"userIdentity.userName|fieldref": "requestParameters.userName"})
    assert m({"userIdentity": {"userName": "Bob"}, "requestParameters": {"userName": "bob"}})
    assert not m({"userIdentity": {"userName": "bob"}, "requestParameters": {"userName": "alice"}})
    assert not m({"userIdentity": {"userName": "bob"}})
    c = sel({"userIdentity.arn|fieldref|endswith": "requestParameters.userName"})
    assert c({"userIdentity": {"arn": "arn:aws:iam::1:user/bob"}, "requestParameters": {"userName": "bob"}})


def test_neq_negates_the_item() -> None:
    m = sel({"a": "x", "b|neq": "y"})
    assert m({"a": "x", "b": "z"}) and m({"a": "x"}) and not m({"a": "x", "b": "Y"})


def test_dotted_paths_into_nested_objects_lists_and_flat_dotted_keys() -> None:
    m = sel({"userIdentity.sessionContext.sessionIssuer.type": "Role"})
    assert m({"userIdentity": {"sessionContext": {"sessionIssuer": {"type": "Role"}}}})
    assert m({"userIdentity.sessionContext": {"sessionIssuer.type": "Role"}})  # flat dotted keys
    lists = sel({"target.alternateId": "admin@x.io"})
    okta = {"target": [{"alternateId": "app"}, {"alternateId": "ADMIN@x.io"}]}
    assert lists(okta)
    assert not lists({"target": [{"alternateId": "app"}]})
    scalars = sel({"user.groups": "system:masters"})
    assert scalars({"user": {"groups": ["system:authenticated", "system:masters"]}})
    deep = sel({"resources.ARN|endswith": ":trail/main"})
    assert deep({"resources": [{"ARN": "arn:aws:s3:::b"}, {"ARN": "arn:aws:cloudtrail:x:1:trail/main"}]})


def test_object_values_match_as_json_text() -> None:
    m = sel({"requestParameters|contains": "Suspended"})
    assert m({"requestParameters": {"bucketName": "b", "VersioningConfiguration": {"Status": "Suspended"}}})
    assert not m({"requestParameters": {"bucketName": "b"}})
    star = sel({"requestParameters": "*"})
    assert star({"requestParameters": {}}) and not star({"requestParameters": None}) and not star({})


def test_keywords_search_every_scalar_value() -> None:
    m = matcher({"keywords": ["event::clear", "event::drop"], "condition": "keywords"})
    assert m({"a": {"b": ["x", "run EVENT::CLEAR now"]}})
    assert not m({"a": "event clear"})
    allk = matcher({"keywords": {"|all": ["OabVirtualDirectory", " -ExternalUrl "]}, "condition": "keywords"})
    assert allk({"cmd": "Set-OabVirtualDirectory -ExternalUrl x"})
    assert allk({"a": "OabVirtualDirectory", "b": "y -ExternalUrl z"})
    assert not allk({"cmd": "Set-OabVirtualDirectory"})


def test_selection_maps_are_and_lists_of_maps_are_or() -> None:
    m = sel({"eventSource": "iam.amazonaws.com", "eventName": "CreateUser"})
    assert m({"eventSource": "iam.amazonaws.com", "eventName": "CreateUser"})
    assert not m({"eventSource": "iam.amazonaws.com", "eventName": "DeleteUser"})
    anyof = sel([{"eventSource": "ssm.amazonaws.com"}, {"sourceIPAddress": "AWS Internal"}])
    assert anyof({"eventSource": "ssm.amazonaws.com"}) and anyof({"sourceIPAddress": "aws internal"})
    assert not anyof({"eventSource": "ec2.amazonaws.com"})


@pytest.mark.parametrize(
    ("condition", "doc", "expected"),
    [
        ("1 of selection_*", {"a": 1}, True),
        ("1 of selection_*", {"c": 3}, False),
        ("all of selection_*", {"a": 1}, False),
        ("all of selection_*", {"a": 1, "b": 2}, True),
        ("1 of them", {"c": 3}, True),
        ("all of them", {"a": 1, "b": 2}, False),
        ("all of them", {"a": 1, "b": 2, "c": 3}, True),
        ("selection_a and not filter", {"a": 1, "c": 3}, False),
        ("selection_a and not filter", {"a": 1}, True),
        ("not selection_a or filter", {"a": 1}, False),
        ("selection_a and (selection_b or filter)", {"a": 1, "c": 3}, True),
        ("selection_a and selection_b or filter", {"c": 3}, True),  # and binds tighter than or
        ("not (selection_a or selection_b)", {"x": 1}, True),
        ("1 of selection_* and not 1 of filter*", {"b": 2}, True),
        ("1 of selection_* and not 1 of filter*", {"b": 2, "c": 3}, False),
    ],
)
def test_conditions(condition: str, doc: dict, expected: bool) -> None:
    m = matcher({
        "selection_a": {"a": 1}, "selection_b": {"b": 2}, "filter": {"c": 3}, "_hidden": {"x": 1},
        "condition": condition,
    })
    assert m(doc) is expected


def test_them_ignores_underscore_identifiers() -> None:
    m = matcher({"sel": {"a": 1}, "_helper": {"x": 1}, "condition": "1 of them"})
    assert m({"a": 1}) and not m({"x": 1})


def test_a_list_of_conditions_is_or() -> None:
    m = matcher({"s1": {"a": 1}, "s2": {"b": 2}, "condition": ["s1", "s2"]})
    assert m({"a": 1}) and m({"b": 2}) and not m({"c": 1})


def test_time_part_modifiers() -> None:
    m = sel({"eventTime|hour": 2, "eventTime|minute": 14})
    assert m({"eventTime": "2026-11-27T02:14:09Z"}) and not m({"eventTime": "2026-11-27T03:14:09Z"})
    assert sel({"created_at|year": 2020})({"created_at": 1583364251067})  # epoch milliseconds
    assert not sel({"t|day": 5})({"t": "not a time"})


def test_utf16_with_byte_order_mark() -> None:
    m = sel({"f|utf16|base64offset|contains": "cmd"})
    assert m({"f": base64.b64encode("\ufeffcmd /c".encode("utf-16-le")).decode()})


def test_neq_with_fieldref_and_lists() -> None:
    m = sel({"a|neq": ["x", "y"]})
    assert m({"a": "z"}) and not m({"a": "X"})
    f = sel({"src|fieldref|neq": "dst"})
    assert f({"src": "1", "dst": "2"}) and not f({"src": "1", "dst": "1"})


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(pattern=st.text(alphabet="abA*?\\.\n", max_size=8), text=st.text(alphabet="abAB.*?\\\n", max_size=10),
       cased=st.booleans())
def test_string_matching_agrees_with_pysigmas_own_regex_translation(pattern: str, text: str, cased: bool) -> None:
    """Every fast path (equality, prefix, suffix, substring, set lookup) gives what pySigma's own
    translation of the Sigma string into a regular expression gives."""
    import re

    from sigma.types import SigmaString

    from pipeline.rules.compile import string_test

    s = SigmaString(pattern)
    reference = re.compile(str(s.to_regex().regexp), re.DOTALL | (0 if cased else re.IGNORECASE))
    assert string_test(s, cased=cased)(text) is (reference.fullmatch(text) is not None), (pattern, text)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.text(alphabet="abAB.*", min_size=0, max_size=4), min_size=1, max_size=5),
       field_value=st.one_of(st.text(alphabet="abAB.*", max_size=4), st.lists(st.text(alphabet="abAB", max_size=3))))
def test_value_lists_are_any_of_their_values(values: list[str], field_value: object) -> None:
    from sigma.types import SigmaString

    from pipeline.rules.compile import string_test

    got = sel({"f": values})({"f": field_value})
    items = field_value if isinstance(field_value, list) else [field_value]
    assert got is any(string_test(SigmaString(v))(t) for v in values for t in items)
