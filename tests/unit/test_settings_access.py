"""Settings of access control and query limits (CAUSELOG_QUERY_*, CAUSELOG_TOKEN*, CAUSELOG_AUDIT_QUERIES)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load
from pipeline.store.client import QueryLimits


def test_defaults(tmp_path: Path) -> None:
    s = load({"CAUSELOG_HOME": str(tmp_path)})
    assert (s.query_timeout, s.query_max_rows, s.query_max_rows_read, s.query_max_memory) == (
        30.0, 100_000, 1_000_000_000, 2 * 1024**3)
    assert s.tokens_path == tmp_path / "tokens.json" and s.admin_token_path == tmp_path / "admin.token"
    assert s.token is None and s.audit_queries is True


def test_values_are_read(tmp_path: Path) -> None:
    s = load({"CAUSELOG_HOME": str(tmp_path), "CAUSELOG_QUERY_TIMEOUT": "5", "CAUSELOG_QUERY_MAX_ROWS": "10",
              "CAUSELOG_QUERY_MAX_ROWS_READ": "1000", "CAUSELOG_QUERY_MAX_MEMORY": str(64 * 1024**2),
              "CAUSELOG_TOKENS_FILE": str(tmp_path / "shared" / "t.json"), "CAUSELOG_TOKEN": " clt_x ",
              "CAUSELOG_AUDIT_QUERIES": "0"})
    assert QueryLimits.of(s) == QueryLimits(5.0, 10, 1000, 64 * 1024**2)
    assert s.tokens_path == tmp_path / "shared" / "t.json" and s.token == "clt_x" and s.audit_queries is False


@pytest.mark.parametrize(("name", "value"), [
    ("CAUSELOG_QUERY_TIMEOUT", "0"), ("CAUSELOG_QUERY_TIMEOUT", "soon"), ("CAUSELOG_QUERY_MAX_ROWS", "0"),
    ("CAUSELOG_QUERY_MAX_ROWS_READ", "-1"), ("CAUSELOG_QUERY_MAX_MEMORY", "1000"), ("CAUSELOG_AUDIT_QUERIES", "yes"),
])
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load({"CAUSELOG_HOME": str(tmp_path), name: value})


def test_readonly_comes_last_in_the_clickhouse_settings() -> None:
    limits = QueryLimits(timeout=2.4, max_rows=7)
    for cap in (True, False):
        wanted = limits.clickhouse(result_cap=cap)
        assert list(wanted)[-1] == "readonly" and wanted["readonly"] == 1
        assert wanted["max_execution_time"] == 2
        assert ("max_result_rows" in wanted) is cap
