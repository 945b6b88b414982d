"""A malformed YAML file of the operator's (identities.yaml, retention.yaml, a webhook mapping) is
reported in one line naming the file, the problem and its line and column. PyYAML's own message
spans several lines with an excerpt of the file, and the CLI printed it as such (found walking the
README as a user; topology.yaml, read by `causelog why`, found by a later QA walk)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.correlate.topology import load_topology
from pipeline.errors import ConfigError
from pipeline.identity.config import load_identities
from pipeline.integrity.retention import load_policy
from pipeline.sources.webhook_map import load_mapping

BROKEN = "top:\n  list: [a, b\n"


@pytest.mark.parametrize("load", [load_identities, load_policy, load_mapping, load_topology])
def test_broken_yaml_is_one_line_with_its_place(tmp_path: Path, load: Callable[[Path], Any]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = str(caught.value)
    assert "\n" not in text, text
    assert str(path) in text and "YAML" in text and "at line 3, column 1" in text, text
