"""Helpers for the rules tests: compile one Sigma detection and match it against a document."""

from __future__ import annotations

from typing import Any

from sigma.rule import SigmaRule

from pipeline.rules.compile import compile_detection
from pipeline.rules.fields import Doc


def matcher(detection: dict[str, Any]) -> Any:
    """A ``doc -> bool`` for a Sigma ``detection`` block (compiled once, like the loader does)."""
    rule = SigmaRule.from_dict({"title": "t", "logsource": {"product": "test"}, "detection": detection})
    pred = compile_detection(rule)
    return lambda doc: pred(Doc(doc))


def sel(selection: Any, **more: Any) -> Any:
    """A matcher for a single selection (``condition: selection``)."""
    return matcher({"selection": selection, "condition": "selection", **more})
