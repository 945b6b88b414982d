"""The HTML reports in a real headless Chromium: they render with no console error, without the
network, and the chain graphs hold the expected nodes. Screenshots are kept as test artifacts
(pytest's tmp dir, and build/report-screenshots/ which git ignores)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from browser import load_page

from pipeline.report import accountability_html, why_html

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "report-screenshots"
PROBE = """JSON.stringify({
  title: document.title,
  causes: document.querySelectorAll('table.causes tr').length - 1,
  graphs: [...document.querySelectorAll('svg.chain')].map(g =>
      [...g.querySelectorAll('g.node')].map(n => n.dataset.type)),
  focus: [...document.querySelectorAll('svg.chain g.node.focus')].map(n => n.dataset.eventId),
  edges: document.querySelectorAll('svg.chain path.edge').length,
  symptom: document.querySelector('.symptom') && document.querySelector('.symptom').textContent,
  person: [...document.querySelectorAll('.person')].map(n => n.textContent),
  resources: performance.getEntriesByType('resource').length,
  height: document.body.scrollHeight,
})"""


# chDB runs one engine per process, bound to one directory (the unit tests' when the whole suite
# runs in one pytest process): the answers are computed in a child process of their own.
ANSWERS = """
import sys
from datetime import timedelta
import orjson
from incident_data import AT, FRIDA, frida_chain, outage, write
from pipeline.correlate.topology import Topology
from pipeline.settings import load
from pipeline.store import migrate, open_store, queries
from pipeline.store.reports import accountability
from pipeline.stream.jsonio import dumps

store = open_store(load({"CAUSELOG_HOME": sys.argv[1], "CAUSELOG_DATABASE": "report"}))
migrate(store)
write(store, [*outage(), *[dict(e, id=f"f-{e['id']}") for e in frida_chain()]])
topo = Topology.from_obj({"depends_on": {"payments-api": ["payments-db"], "payments-db": ["payments-exports"]}})
why = queries.why(store, "payments-db", at=AT, window=timedelta(hours=6), topology=topo, identities=FRIDA)
report = accountability(store, since=AT - timedelta(days=7), until=AT, identities=FRIDA)
sys.stdout.buffer.write(dumps({"why": why, "report": report}))
store.close()
"""


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The ``why`` answer and the accountability report, as the API sends them (JSON)."""
    home = tmp_path_factory.mktemp("report-home")
    tests = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", ANSWERS, str(home)], capture_output=True, timeout=300,
                          cwd=tests.parent, env={**os.environ, "PYTHONPATH": str(tests)})
    assert done.returncode == 0, done.stderr.decode()
    return dict(orjson.loads(done.stdout))


def _keep(shot: bytes, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(shot)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)
    return path


def test_why_report_renders_with_its_chain_graphs(answers: dict[str, Any], tmp_path: Path) -> None:
    answer = answers["why"]
    page = tmp_path / "why.html"
    page.write_text(why_html(answer))
    run = load_page(page, PROBE)
    assert run.errors == []
    seen = orjson.loads(run.value)
    assert seen["title"] == "why payments-db" and seen["causes"] == len(answer["causes"]) >= 5
    assert seen["resources"] == 0  # self-contained: nothing fetched
    assert "db.failed" in seen["symptom"]
    delete = next(n for n, c in enumerate(answer["causes"]) if c["event"]["action"] == "DeleteBucket")
    # frida's role chain: user -> AssumeRole ops -> AssumeRole prod-admin -> DeleteBucket, one node each.
    chains = [g for g in seen["graphs"] if "aws.s3.delete_bucket" in g]
    assert chains == [["iam.role.assumed", "iam.role.assumed", "aws.s3.delete_bucket"]]
    assert answer["causes"][delete]["event"]["id"] in seen["focus"]
    assert seen["edges"] >= 2 and "frida" in seen["person"]
    shot = _keep(run.screenshot, tmp_path, "why-report.png")
    assert shot.stat().st_size > 10_000 and seen["height"] > 600


def test_accountability_report_renders(answers: dict[str, Any], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(accountability_html(answers["report"]))
    run = load_page(page, "JSON.stringify([...document.querySelectorAll('h2')].map(h => h.textContent))")
    assert run.errors == []
    assert orjson.loads(run.value) == ["By kind", "By target", "By person", "Assurance mix",
                                       "Changes without an owner", "Access and privilege changes"]
    _keep(run.screenshot, tmp_path, "accountability-report.png")


def test_a_broken_page_is_caught(tmp_path: Path) -> None:
    """The check itself: a script error and a console error are both reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><script>console.error('boom'); undefinedCall();</script>"
                    "</body></html>")
    run = load_page(page, "1")
    assert len(run.errors) >= 2
