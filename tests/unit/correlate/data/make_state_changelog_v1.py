#!/usr/bin/env python
"""Writes ``state_changelog_v1.json.gz`` (see ``tests/unit/correlate/test_state_compat.py``).

It was run with the correlation state of commit 6f796fc (lists and arrays in memory) to record
what that version wrote and produced; run with a later version it records that version's output.

    .venv/bin/python tests/unit/correlate/data/make_state_changelog_v1.py OUT.json.gz
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from factories import chain_workload  # noqa: E402

from pipeline.correlate import CorrelationConfig  # noqa: E402
from pipeline.correlate.partition import correlate_batch  # noqa: E402
from pipeline.model.event import from_micros, to_micros  # noqa: E402


@dataclass(frozen=True)
class Ev:
    id: str
    time: datetime
    links: tuple[str, ...]
    scope: str


def ev(x: list) -> Ev:
    return Ev(x[0], from_micros(x[1]), tuple(x[3]), x[2])


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def main(out: str) -> None:
    docs = chain_workload(1200, seed=11, scopes=("acme", "globex"), span_h=30.0)
    events = []
    for d in docs:
        eid = d["id"] if d["scope"] == "acme" else f"gx-{d['id'][:10]}"  # globex: ids that are not 32 hex
        events.append([eid, to_micros(datetime.fromisoformat(d["time"])), d["scope"], list(d.get("links") or [])])
    config = CorrelationConfig(max_per_key=4)
    half = len(events) // 2
    pcs: dict = {}
    log = []
    for i in range(0, half, 100):
        batch = ((ev(x), 0 if x[2] == "acme" else 1, i + j) for j, x in enumerate(events[i : i + 100]))
        correlate_batch(pcs, batch, config)
        for p, pc in pcs.items():
            log.extend([p, b64(k), b64(v)] for k, v in pc.changelog())
    rest = events[half:]
    result = correlate_batch(pcs, ((ev(x), 0 if x[2] == "acme" else 1, half + j) for j, x in enumerate(rest)), config)
    after = {f"{p}:{b64(k)}": b64(v) for p, pc in pcs.items() for k, v in pc.changelog()}
    expected = {"chains": result.chains, "heads": result.heads, "edges": [list(e) for e in result.edges],
                "aliases": [list(a) for a in result.aliases], "expired": result.expired,
                "live_keys": {p: sum(len(s.keys) for s in pc.states.values()) for p, pc in pcs.items()}}
    doc = {"about": "written by the correlation state of commit 6f796fc (in-memory lists, changelog version 1), "
                    "see tests/unit/correlate/test_state_compat.py",
           "max_per_key": 4, "first_offset_of_rest": half, "changelog": log, "rest": rest, "expected": expected,
           "changelog_after": after}
    with gzip.open(out, "wt") as f:
        json.dump(doc, f, separators=(",", ":"))


if __name__ == "__main__":
    main(sys.argv[1])
