"""Shared by the IAM/audit and database corpus tests (CloudTrail, Okta, GitHub audit log,
PostgreSQL logs, pgaudit, Debezium): where their sample data lives and what their envelopes must
never contain. Envelope checks themselves come from ``_sources_corpus``.
"""

from __future__ import annotations

import re
from pathlib import Path

from _sources_corpus import DATA

IAM = DATA / "iam"
STRATUS_DIR = IAM / "stratus-red-team-detonation-logs"
OTRF_DIR = IAM / "otrf-security-datasets" / "atomic" / "aws"
OTRF_JSON = OTRF_DIR / "collection" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json"
OTRF_CSV = OTRF_DIR / "discovery" / "AWS_S3_HoneyBucketLogs.csv"
OKTA_DIR = IAM / "elastic-integrations-okta-system"
GITHUB_AUDIT_FILE = IAM / "elastic-integrations-github-audit" / "test-organisation-audit-json.excerpt.log"
DATABASE = DATA / "database"
PGBADGER_DIR = DATABASE / "pgbadger-fixtures"
PGAUDIT_FILE = DATABASE / "pgaudit-regression" / "pgaudit.out"
DEBEZIUM_DIR = DATABASE / "debezium-core-serde"

#: Passwords set by ``ALTER ROLE ... WITH PASSWORD '...'`` in cnpg.log: they must appear nowhere.
CNPG_PASSWORDS = (
    "FLPDxlnW2MLyIOgtRaCqyW35mT8naTqh3MXtNYFCjaVz101kO3daQtSNn8aDjSNc",
    "qsGMsWLcH8CpcR1T5JuBHfjopKsW3OHjfoTKmitlRAoqz7A30DbTd9T5bioRO5Gi",
)

_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def missing(path: Path) -> str | None:
    """Why a corpus test must skip, or None when ``path`` (file or non-empty folder) exists."""
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        return None
    return f"sample data not found at {path} (expected ../shared/data next to the repository)"


def string_literals(sql: str, min_length: int = 6) -> list[str]:
    """The contents of the single-quoted literals of ``sql`` that are long enough to be
    recognisable (shorter ones such as ``'r'`` occur by chance in any JSON)."""
    return [m.group(1).replace("''", "'") for m in _LITERAL.finditer(sql) if len(m.group(1)) >= min_length]


_DIGIT_LITERAL = re.compile(r"(?<![\w$.])\d")


def assert_normalized(statement: str) -> None:
    """A normalised statement holds no quoted literal and no numeric literal."""
    assert "'" not in statement, statement
    assert not _DIGIT_LITERAL.search(statement), statement
