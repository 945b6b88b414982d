"""Damaged real records of the IAM/audit and database sources: the normalizers raise
DecodeError (naming a field), never anything else; the log parsers never raise at all.

Each JSON case takes a real record, replaces one value (up to two levels deep) with a value of
the wrong shape, and normalizes it. Log parsers get random text (hypothesis) and damaged copies
of real lines; whatever they yield must map to envelopes or a DecodeError.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _audit_corpus import (
    DEBEZIUM_DIR,
    GITHUB_AUDIT_FILE,
    OKTA_DIR,
    OTRF_JSON,
    PGAUDIT_FILE,
    PGBADGER_DIR,
    STRATUS_DIR,
    missing,
)
from _sources_corpus import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import DecodeError
from pipeline.sources import cloudtrail, debezium, github_audit, okta, postgres_log

if _reason := missing(DATA):
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

REPLACEMENTS: list[Any] = [None, 0, "", [1], {"a": 1}, True, "x y"]


def _paths(node: Any, prefix: tuple[Any, ...] = (), depth: int = 0) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if depth >= 2:
        return
    if isinstance(node, dict):
        for key, value in node.items():
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


def _stratus_records() -> list[dict[str, Any]]:
    wanted = {
        "AssumeRole",
        "ConsoleLogin",
        "GetFederationToken",
        "GetCallerIdentity",
        "StopLogging",
        "RunInstances",
    }
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(STRATUS_DIR.glob("*.json")):
        for record in cloudtrail.iter_records(json.loads(path.read_text(encoding="utf-8"))):
            if record["eventName"] in wanted and record["eventName"] not in out:
                out[record["eventName"]] = record
    return list(out.values())


@pytest.mark.parametrize("index", range(6))
def test_damaged_cloudtrail_records(index: int) -> None:
    record = _stratus_records()[index]
    assert _check(record, lambda r: cloudtrail.to_events(r, scope="s")) > 100


def test_damaged_otrf_records() -> None:
    lines = OTRF_JSON.read_text(encoding="utf-8").splitlines()
    for line in (lines[0], next(x for x in lines if '"AssumeRole"' in x)):
        assert _check(json.loads(line), lambda r: cloudtrail.to_events(r, scope="s")) > 50


def test_damaged_okta_events() -> None:
    for path in sorted(OKTA_DIR.glob("*.log")):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert _check(json.loads(line), lambda e: okta.to_events(e, scope="s")) > 50


def test_damaged_github_audit_entries() -> None:
    entries = list(github_audit.parse_lines(GITHUB_AUDIT_FILE.read_text(encoding="utf-8")))
    seen: set[str] = set()
    for entry in entries:
        if entry["action"] in seen:
            continue
        seen.add(entry["action"])
        assert _check(entry, lambda e: github_audit.to_events(e, scope="s")) > 10


@pytest.mark.parametrize("name", ["serde-with-schema.json", "serde-update.json"])
def test_damaged_debezium_events(name: str) -> None:
    value = json.loads((DEBEZIUM_DIR / name).read_text(encoding="utf-8"))
    assert _check(value, lambda v: debezium.to_events(v, scope="s", topic="a.b.c", key={"id": 1})) > 50


def _map_all(records: list[postgres_log.LogRecord]) -> None:
    for record in records:
        try:
            postgres_log.to_events(record, scope="s", server="db")
        except DecodeError as exc:
            assert exc.message


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXT)
def test_parsers_never_raise_on_random_text(text: str) -> None:
    for fmt in ("csvlog", "jsonlog", "stderr", "cloudsql", "pgaudit-transcript"):
        stats: Counter[str] = Counter()
        _map_all(list(postgres_log.parse(text, format=fmt, stats=stats)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=4000), junk=_TEXT)
def test_parsers_survive_damaged_real_logs(cut: int, junk: str) -> None:
    for name in ("anonymize.log", "queryid.log", "stmt_type.log"):
        text = (PGBADGER_DIR / name).read_text(encoding="utf-8")
        damaged = text[:cut] + junk + text[cut:]
        _map_all(list(postgres_log.parse(damaged)))
    audit = PGAUDIT_FILE.read_text(encoding="utf-8")
    _map_all(list(postgres_log.parse_pgaudit_transcript(audit[:cut] + junk + audit[cut : cut + 3000])))


@settings(max_examples=200, deadline=None)
@given(sql=st.text(max_size=300))
def test_normalize_never_raises_and_drops_every_quote(sql: str) -> None:
    from pipeline.sources import pgsql

    normalized = pgsql.normalize(sql)
    assert "'" not in normalized
    pgsql.analyze(sql)


def test_damaged_cnpg_and_cloudsql_json_lines() -> None:
    """Wrong-typed fields inside JSON log lines: parsed leniently, mapped or rejected cleanly."""

    def run(line: Any) -> None:
        text = json.dumps(line)
        for fmt in ("jsonlog", "cloudsql"):
            _map_all(list(postgres_log.parse(text, format=fmt)))

    cnpg = (PGBADGER_DIR / "cnpg.log").read_text(encoding="utf-8").splitlines()
    picks = [
        next(x for x in cnpg if "ALTER ROLE" in x),
        next(x for x in cnpg if "connection authorized" in x),
    ]
    cloudsql = (PGBADGER_DIR / "cloudsql.log").read_text(encoding="utf-8").splitlines()
    picks.append(next(x for x in cloudsql if "statement:" in x))
    for raw in picks:
        assert _check(json.loads(raw), run) > 50
