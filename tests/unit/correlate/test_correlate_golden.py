"""Golden file: the exact emissions of a small incident scenario (tests/golden/chains/incident.json).

The scenario: a commit is pushed, CI runs, the PR merge arrives late, the commit is deployed; a
DB session starts and queries; an API error carries both the app trace and the deploy id, so the
DB session's chain merges into the commit's; the deploy status arrives late (lands between the
deploy and the error); the PR-opened event arrives last and is the earliest of all, so it becomes
the chain's head; CI is replayed; a page has no links; 13 hours later the DB session key has
expired and a new login starts a new chain; finally an expiry sweep the next day.

Times in the golden file are the emissions' ``time_us`` written as RFC 3339 (``time``) so the file
can be reviewed by hand. Regenerate with ``CAUSELOG_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from correlate_helpers import ev

from pipeline.correlate import CorrelationConfig, Emission, State, expire, step
from pipeline.model import format_time, from_micros

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "chains" / "incident.json"
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
SHA = "commit:abc123"


def at(hh: int, mm: int, day: int = 27) -> timedelta:
    return datetime(2026, 11, day, hh, mm, tzinfo=UTC) - datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


SCENARIO = [
    ev("push", at(10, 0), SHA, type="git.push"),
    ev("ci", at(10, 5), SHA, "trace:ci-1", type="ci.run.completed"),
    ev("merge", at(10, 3), "change:acme/api#42", SHA, type="github.pull_request.merged"),
    ev("deploy", at(10, 10), SHA, "deploy:d-7", type="deploy.started"),
    ev("db-login", at(10, 12), "session:postgres:900", type="db.session.started"),
    ev("db-query", at(10, 14), "session:postgres:900", "trace:app-1", type="db.query"),
    ev("api-error", at(10, 15), "trace:app-1", "deploy:d-7", type="api.request.failed"),
    ev("deploy-ok", at(10, 11), "deploy:d-7", type="deploy.succeeded"),
    ev("pr-opened", at(9, 58), "change:acme/api#42", type="github.pull_request.opened"),
    ev("ci", at(10, 5), SHA, "trace:ci-1", type="ci.run.completed"),  # replay
    ev("pager", at(10, 16), type="alert.fired"),
    ev("db-login-2", at(23, 0), "session:postgres:900", type="db.session.started"),
]
FINAL_SWEEP = T0 + at(0, 0, day=29)


def render(e: Emission) -> dict[str, Any]:
    d = msgspec.to_builtins(e)
    if "time_us" in d:
        d["time"] = format_time(from_micros(d.pop("time_us")))
    return d


def produce() -> dict[str, Any]:
    state = State(CorrelationConfig())
    steps = []
    watermark = None
    for e in SCENARIO:
        watermark = e.time if watermark is None else max(watermark, e.time)
        _, out = step(state, e, watermark)
        steps.append(
            {
                "event": {"id": e.id, "time": format_time(e.time), "links": list(e.links)},
                "now": format_time(watermark),
                "emissions": [render(x) for x in out],
            }
        )
    _, out = expire(state, FINAL_SWEEP)
    steps.append({"expire": format_time(FINAL_SWEEP), "emissions": [render(x) for x in out]})
    return {
        "scenario": __doc__.split("\n\n")[1].replace("\n", " "),
        "config": "defaults (session 12h, trace 24h, deploy 30d, commit/change never; 64 per key); "
        "now = latest event time seen",
        "steps": steps,
    }


def dumps(doc: dict[str, Any]) -> str:
    """Pretty JSON with one event and one emission per line, for reviewing by hand."""
    one = json.dumps
    lines = ["{", f' "scenario": {one(doc["scenario"])},', f' "config": {one(doc["config"])},', ' "steps": [']
    for i, s in enumerate(doc["steps"]):
        head = {k: v for k, v in s.items() if k != "emissions"}
        lines.append(f'  {one(head)[:-1]}, "emissions": [')
        lines += [
            f"   {one(x)}" + ("," if j < len(s["emissions"]) - 1 else "")
            for j, x in enumerate(s["emissions"])
        ]
        lines.append("  ]}" + ("," if i < len(doc["steps"]) - 1 else ""))
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


def test_incident_scenario_matches_the_golden_file() -> None:
    got = produce()
    if os.environ.get("CAUSELOG_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(dumps(got))
    assert got == json.loads(GOLDEN.read_text())
