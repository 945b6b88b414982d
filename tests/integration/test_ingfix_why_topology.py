"""`causelog why` with a broken $CAUSELOG_HOME/topology.yaml: one error line naming the file, the
problem, its line and column (a QA walk saw PyYAML's multi-line message, excerpt included)."""

from __future__ import annotations

import pytest
from kafka_stack import Stack

pytestmark = pytest.mark.integration


def test_why_with_a_broken_topology_says_where_in_one_line(stack: Stack) -> None:
    topology = stack.home / "topology.yaml"
    topology.write_text("services:\n  orders-api:\n    depends_on: [x\n")
    stack.start_worker()
    done = stack.cli("why", "orders-db", "--at", "2026-11-27 02:14")
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert f"{topology}: not valid YAML:" in lines[0] and "at line 4, column 1" in lines[0], done.stderr
