"""Shared by the source corpus and golden tests: where the sample data lives, how to read it,
and the envelope checks every normalized event must pass.

The data is never copied into the project: it is read from ``../shared/data`` next to the
repository (see that folder's PROVENANCE.md). Modules skip themselves when it is absent.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.model import Event, decode, encode, to_dict

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
GOLDEN = ROOT / "tests" / "golden"
SCHEMA_PATH = ROOT / "schemas" / "change_event.schema.json"

GITHUB_DIR = DATA / "git" / "octokit-webhooks"
K8S_DIR = DATA / "config" / "falco-k8s-audit"
TERRAFORM_DIR = DATA / "config" / "terraform-json-plans"

_validator: Any = None


def missing_reason(folder: Path) -> str | None:
    """Why a corpus test must skip, or None when ``folder`` holds data."""
    if not folder.is_dir() or not any(folder.rglob("*.json")):
        return f"sample data not found at {folder} (expected ../shared/data next to the repository)"
    return None


def read_json_documents(path: Path) -> list[Any]:
    """One JSON document, or JSON Lines (one document per non-empty line)."""
    text = path.read_text(encoding="utf-8")
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def schema_validator() -> Any:
    """A JSON-Schema validator for the envelope contract, or None while the schema is not written."""
    global _validator
    if _validator is None and SCHEMA_PATH.is_file():
        from jsonschema import Draft202012Validator

        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        _validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return _validator


def check_envelope(event: Event) -> None:
    """The event survives the canonical codec unchanged and satisfies the JSON Schema (if present)."""
    data = encode(event)
    assert decode(data) == event
    assert encode(decode(data)) == data
    validator = schema_validator()
    if validator is not None:
        errors = sorted(validator.iter_errors(json.loads(data)), key=lambda e: list(e.path))
        assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def print_counts(title: str, counts: Counter[str]) -> None:
    """Per-type counts, for ``pytest -s``."""
    print(f"\n{title}: {sum(counts.values())} events, {len(counts)} types")
    for type_, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {n:4d}  {type_}")


def as_golden(events: list[Event]) -> list[dict[str, Any]]:
    """The canonical dicts of ``events``, as JSON would give them back."""
    return json.loads(json.dumps([to_dict(e) for e in events]))
