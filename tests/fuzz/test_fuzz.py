"""Smoke run of every fuzz target (1,000 inputs each) inside `make test`; `make fuzz` runs
tests/fuzz/runner.py with 100,000 per target. A crash is any exception other than the documented
error types (see targets.py)."""

from __future__ import annotations

import pytest
from runner import fuzz
from targets import Target, all_targets

INPUTS = 1_000


@pytest.mark.parametrize("target", all_targets(), ids=lambda t: t.name)
def test_no_crash(target: Target) -> None:
    outcome = fuzz(target, INPUTS)
    assert outcome.tried == INPUTS
    assert outcome.crashes == 0, "\n".join(outcome.first)
