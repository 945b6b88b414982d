"""The CLI against a real broker and a real worker (embedded store behind the worker API)."""

from __future__ import annotations

import os
import signal
import time
import urllib.parse
import urllib.request

import pytest
from factories import event_bytes, event_dict
from kafka_stack import Stack, json_rows

pytestmark = pytest.mark.integration

REPO_SAMPLE = "deploy/sample/changes.jsonl"


def test_up_produce_sql_timeline_status_down(stack: Stack) -> None:
    (stack.home / "topology.yaml").write_text("depends_on:\n  api: [orders-db]\n")
    up = stack.cli("up", "--detach")
    assert up.returncode == 0, up.stderr
    assert "causelog is up" in up.stderr

    produced = stack.cli("produce", REPO_SAMPLE, "--wait", "60")
    assert produced.returncode == 0, produced.stderr
    assert "sent 11 events" in produced.stderr and "stored" in produced.stderr
    # --wait returns only once the worker committed, i.e. after the rows landed.
    assert stack.sql("SELECT count() FROM DB.events")[0][0] == 11

    rows = json_rows(stack.cli("timeline", "--since", "2026-11-27 01:00", "--until", "2026-11-27T02:14:00Z",
                               "--target", "orders-db", "--json", check=True).stdout)
    assert [r["type"] for r in rows] == ["config.changed", "db.session.started", "db.query", "db.failed"]
    assert rows[-1]["outcome"] == "failure" and rows[-1]["time"] == "2026-11-27T02:14:00.000000Z"

    why = json_rows(stack.cli("why", "orders-db", "--at", "2026-11-27T02:14:00Z", "--window", "2h", "--json",
                              check=True).stdout)
    assert why["related"] == ["api", "orders-db"]
    causes = {c["event"]["type"]: c for c in why["causes"]}
    # The repository acme/api is named `api` too (target.name): its commit, review, merge and CI count.
    assert set(causes) == {"db.query", "db.session.started", "config.changed", "deploy.succeeded",
                           "deploy.created", "git.commit", "change.reviewed", "change.merged", "ci.run.success"}
    # The failure at 02:14 is the symptom, not a cause.
    assert [s["event"]["type"] for s in why["symptoms"]] == ["db.failed"]
    assert why["matches"] == [{"kind": "database", "id": "orders-db", "name": "orders-db", "service": "orders-db",
                               "how": "target.id", "events": 4}]
    ranked = [c["event"]["type"] for c in why["causes"]]
    # The config change outranks everything; deploys outrank the plain session start.
    assert ranked[0] == "config.changed"
    assert max(ranked.index("deploy.created"), ranked.index("deploy.succeeded")) < ranked.index("db.session.started")
    deploy = causes["deploy.created"]
    # The deploy's chain reaches back through its commit to the merged, reviewed change and CI.
    assert {e["type"] for e in deploy["chain"]} >= {"git.commit", "change.merged", "change.reviewed",
                                                     "ci.run.success", "deploy.succeeded"}
    assert deploy["story"]["reviewers"] == ["carol (authenticated)"]
    assert deploy["story"]["changes"] == ["acme/api#42"]
    query = causes["db.query"]
    assert "erin@acme.io (mfa)" in query["story"]["actors"]  # the role assumption behind the session
    assert query["story"]["traces"] == ["4bf92f3577b34da6a3ce929d0e0e4736"]
    chain = json_rows(stack.cli("chain", deploy["event"]["id"], "--json", check=True).stdout)
    by_id = {e["id"]: e["type"] for e in chain["events"]}
    assert by_id[chain["chain_id"]] == "git.commit"  # the chain id is its earliest event
    assert sorted(by_id.values()) == sorted(["git.commit", "change.reviewed", "change.merged", "ci.run.success",
                                             "deploy.created", "deploy.succeeded"])
    commit_key = next(k for k in deploy["event"]["links"] if k.startswith("commit:"))
    on_commit = [(by_id[x["from"]], by_id[x["to"]]) for x in chain["edges"] if x["key"] == commit_key]
    assert on_commit == [("change.merged", "git.commit"), ("ci.run.success", "change.merged"),
                         ("deploy.created", "ci.run.success")]
    missing = stack.cli("chain", "no-such-event")
    assert missing.returncode == 2 and "no event with id" in missing.stderr
    text = stack.cli("why", "orders-db", "--at", "2026-11-27 02:14", check=True).stdout
    assert "config.changed" in text and "reviewers: carol" in text
    assert "symptom: db.failed" in text

    # The report to share: one HTML file from the CLI, the same page from the API.
    page = stack.home / "why.html"
    made = stack.cli("why", "orders-db", "--at", "2026-11-27 02:14", "--html", str(page), check=True)
    assert "report written to" in made.stderr
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and 'data-type="deploy.created"' in html and "<script" not in html
    query = urllib.parse.urlencode({"target": "orders-db", "at": "2026-11-27T02:14:00+00:00", "format": "html"})
    from pipeline.tokens import local_token

    token = local_token(None, stack.settings.admin_token_path)
    request = urllib.request.Request(f"{stack.settings.api_url}/v1/why?{query}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        assert 'data-type="config.changed"' in resp.read().decode()
    report = json_rows(stack.cli("report", "--since", "2026-11-26", "--until", "2026-11-28", "--json",
                                 check=True).stdout)
    kinds = {g["kind"]: g["events"] for g in report["by_kind"]}
    assert set(kinds) == {"config", "deploy"} and report["summary"]["changes"] == 3
    assert report["summary"]["reviewed"] == 2  # both deploys have carol's review in their chain

    session = json_rows(stack.cli("session", "6560a1b2.3f1", "--json", check=True).stdout)
    assert [r["type"] for r in session] == ["db.session.started", "db.query"]
    trace = json_rows(stack.cli("trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--json", check=True).stdout)
    assert [r["type"] for r in trace] == ["db.query"]
    erin = json_rows(stack.cli("who", "erin@acme.io", "--since", "2026-11-27 02:00", "--json", check=True).stdout)
    assert [r["type"] for r in erin] == ["iam.role.assumed", "db.session.started", "db.query"]
    assert json_rows(stack.cli("who", "erin@acme.io", "--until", "2026-11-27 02:04", "--json",
                               check=True).stdout)[0]["type"] == "iam.role.assumed"
    assert json_rows(stack.cli("session", "no-such-session", "--json", check=True).stdout) == []

    counts = json_rows(stack.cli("sql", "SELECT key_type, count() AS n FROM causelog.event_links "
                                        "WHERE key_type = {k:String} GROUP BY key_type", "-p", "k=commit",
                                 "--json", check=True).stdout)
    assert counts == [{"key_type": "commit", "n": 5}]

    refused = stack.cli("sql", "DROP TABLE causelog.events")
    assert refused.returncode == 2 and "query rejected: only SELECT" in refused.stderr
    refused = stack.cli("sql", "SELECT count() FROM events SETTINGS readonly = 0")
    assert refused.returncode == 2 and "readonly" in refused.stderr.lower()
    # The default database is causelog: no prefix needed.
    assert json_rows(stack.cli("sql", "SELECT count() AS n FROM events", "--json", check=True).stdout) == [{"n": 11}]
    # A refused query must not leave the worker's own store handle read-only.
    stack.produce([event_bytes(i) for i in range(5)])
    stack.wait_rows(16, timeout=30)

    # Offsets are committed at the worker's next checkpoint (as soon as it is idle).
    deadline = time.monotonic() + 20
    while True:
        status = stack.cli("status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json_rows(status.stdout)
        if (report["lag"] == 0 and report["rules"]["lag"] == 0 and report["rules"].get("sink_lag") == {"store": 0}) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert report["tables"]["events"] == 16 and report["lag"] == 0
    # `causelog up` started the rules runner; it has evaluated every stored event on <prefix>.chains.
    assert report["rules"]["up"] and report["rules"]["lag"] == 0
    assert report["rules"]["sink_lag"] == {"store": 0}  # the alert sink stored what was raised
    assert "rules runner ready" in (stack.home / "run" / "rules.log").read_text()
    json_rows(stack.cli("alerts", "--json", check=True).stdout)

    # A runner that dies shows in `causelog status`, which then fails.
    os.kill(report["rules"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (status := stack.cli("status", "--json")).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status.returncode == 1 and json_rows(status.stdout)["rules"]["up"] is False
    assert "rules" in stack.cli("status").stdout

    down = stack.cli("down")
    assert down.returncode == 0 and "worker stopped" in down.stderr
    assert stack.health() is None
    after = stack.cli("status")
    assert after.returncode == 1


def test_produce_reports_bad_lines_with_numbers_and_sends_the_rest(stack: Stack) -> None:
    lines = [event_bytes(1), b"", b"{not json", event_bytes(2), b'{"specversion": "1.0"}', event_bytes(3)]
    result = stack.cli("produce", "-", input=b"\n".join(lines) + b"\n")
    assert result.returncode == 1
    assert "-:3: bad_json" in result.stderr
    assert "-:5: missing_field" in result.stderr
    assert "sent 3 events" in result.stderr and "2 bad line(s)" in result.stderr
    got = stack.read_topic(stack.settings.topic_changes, expected=3, timeout=20)
    from pipeline.model import decode

    ids = sorted(decode(m.value()).id for m in got)
    assert ids == sorted(event_dict(i)["id"] for i in (1, 2, 3))
    assert all(decode(m.value()).observed_time is not None for m in got)
    assert {m.key() for m in got} == {b"acme"}


def test_query_commands_explain_when_the_worker_is_down(stack: Stack) -> None:
    result = stack.cli("sql", "SELECT 1")
    assert result.returncode == 2
    assert "not answering" in result.stderr and "causelog up" in result.stderr
    assert "Traceback" not in result.stderr
