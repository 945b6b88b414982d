"""The connector kit on a real broker.

- The worked example (examples/connectors/argocd), installed as its own package with pip (into a
  temporary target on PYTHONPATH, so the project's venv is left as it was), runs through
  `causelog ingest plugin argocd` (its entry point): killed with SIGKILL mid-run and started again,
  every sync of the fake Argo CD API is in Kafka exactly once; a bad history entry goes to the DLQ
  with its origin.
- `causelog ingest cloudevents --listen`: curl sends binary- and structured-mode CloudEvents and a
  batch; they are queryable with `causelog timeline`; refused requests (no credentials, another
  media type, an invalid event) get 4xx and produce no event.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_stack import REPO, Stack, free_port, header, json_rows

from pipeline.model import decode, event_id

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "connectors" / "argocd"
TOKEN = "argocd-api-token"
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


@pytest.fixture(scope="module")
def example_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example connector pip-installed into a directory of its own (put on PYTHONPATH)."""
    work = tmp_path_factory.mktemp("example")
    src, target = work / "src", work / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("tests", "__pycache__", "build", "*.egg-info"))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input", "--target", str(target),
           str(src)]
    if all(importlib.util.find_spec(m) is not None for m in ("setuptools", "wheel")):
        cmd.insert(4, "--no-build-isolation")  # build offline with the venv's own build tools
    # else pip fetches setuptools from PyPI into an isolated build environment (like `make install`)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pip install of the example failed:\n{done.stdout}\n{done.stderr}"
    assert list(target.glob("causelog_argocd-*.dist-info/entry_points.txt"))
    return target


def _app(i: int, entries: int, bad: int | None = None) -> dict[str, Any]:
    history = []
    for n in range(1, entries + 1):
        h = {"id": n, "revision": SHA, "deployedAt": f"2026-11-{1 + n % 28:02d}T{i % 24:02d}:{n % 60:02d}:07Z",
             "deployStartedAt": "2026-11-01T00:00:00Z", "initiatedBy": {"username": f"user{i % 7}@acme.io"},
             "source": {"repoURL": "https://github.com/acme/apps", "path": f"apps/app-{i:04d}"}}
        if n == bad:
            del h["deployedAt"]
        history.append(h)
    return {"metadata": {"name": f"app-{i:04d}", "namespace": "argocd", "uid": f"uid-{i}"},
            "spec": {"destination": {"server": "https://kubernetes.default.svc", "namespace": "prod"}},
            "status": {"history": history}}


@contextmanager
def argocd_api(apps: list[dict[str, Any]]) -> Iterator[str]:
    """A stand-in for the Argo CD API server (GET /api/v1/applications with a bearer token);
    it serves ``apps`` as they are at each request."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = orjson.dumps({"items": apps})
            ok = self.path == "/api/v1/applications" and self.headers.get("Authorization") == f"Bearer {TOKEN}"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _committed(stack: Stack, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": "probe",
                  "isolation.level": "read_committed"})
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)  # high = last stable offset
            total += high - low
        return total
    finally:
        c.close()


def _plugin_env(stack: Stack, target: Path) -> None:
    stack.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), stack.env.get("PYTHONPATH")]))
    stack.env["ARGOCD_AUTH_TOKEN"] = TOKEN


def test_installed_connector_killed_mid_run_resumes_exactly_once(stack: Stack, example_target: Path) -> None:
    _plugin_env(stack, example_target)
    listed = stack.cli("ingest", "plugin", "--list", check=True)
    assert "argocd\tcauselog_argocd:ArgoCD" in listed.stdout
    apps = [_app(i, 20) for i in range(2000)]
    total = 2000 * 20
    with argocd_api(apps) as url:
        expected = {event_id(f"argocd:{url}", f"uid-{i}", n) for i in range(2000) for n in range(1, 21)}
        cmd = [sys.executable, "-m", "pipeline.cli.main", "ingest", "plugin", "argocd", "-o", f"server={url}"]
        proc = subprocess.Popen(cmd, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _committed(stack, stack.settings.topic_changes) < 2_000:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no committed output"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _committed(stack, stack.settings.topic_changes) < total, "finished before the kill: proves nothing"

        again = stack.cli("ingest", "plugin", "argocd", "-o", f"server={url}")
        assert again.returncode == 0, again.stderr
        msgs = stack.read_topic(stack.settings.topic_changes, expected=total, timeout=90)
        ids = Counter(orjson.loads(m.value())["id"] for m in msgs)
        assert max(ids.values()) == 1, f"repeated: {[i for i, n in ids.items() if n > 1][:5]}"
        assert set(ids) == expected, f"missing {len(expected - set(ids))}, extra {len(set(ids) - expected)}"
        sample = decode(msgs[0].value())
        assert sample.type == "deploy.succeeded" and sample.links[0] == f"commit:{SHA}"

        third = stack.cli("ingest", "plugin", "argocd", "-o", f"server={url}")
        assert third.returncode == 0 and "argocd: 0 records -> 0 events" in third.stderr


def test_installed_connector_sends_a_bad_record_to_the_dlq_with_its_origin(stack: Stack,
                                                                          example_target: Path) -> None:
    _plugin_env(stack, example_target)
    with argocd_api([_app(1, 3), _app(2, 4, bad=3)]) as url:
        run = stack.cli("ingest", "plugin", "argocd", "-o", f"server={url}", "--scope", "acme")
    assert run.returncode == 1, run.stderr  # something was rejected
    assert "7 records -> 6 events" in run.stderr and "1 rejected to the DLQ (invalid_value 1)" in run.stderr
    [dead] = stack.read_topic(stack.settings.topic_dlq, expected=1, timeout=30)
    assert header(dead, "origin") == "argocd:argocd/app-0002#3" and header(dead, "source") == "argocd"
    assert header(dead, "reason") == "invalid_value" and header(dead, "field") == "$.time"
    assert json.loads(dead.value())["entry"]["id"] == 3
    events = [decode(m.value()) for m in stack.read_topic(stack.settings.topic_changes, expected=6, timeout=30)]
    assert len(events) == 6 and {e.scope for e in events} == {"acme"}


def test_installed_connector_follows_until_sigterm(stack: Stack, example_target: Path) -> None:
    _plugin_env(stack, example_target)
    apps = [_app(1, 2)]
    with argocd_api(apps) as url:
        cmd = [sys.executable, "-m", "pipeline.cli.main", "ingest", "plugin", "argocd", "-o", f"server={url}",
               "--follow", "--interval", "0.5"]
        proc = subprocess.Popen(cmd, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert len(stack.read_topic(stack.settings.topic_changes, expected=2, timeout=60)) == 2
            apps.append(_app(2, 1))  # a new application syncs while the connector follows
            apps[0]["status"]["history"].append(_app(1, 3)["status"]["history"][-1])
            msgs = stack.read_topic(stack.settings.topic_changes, expected=4, timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "argocd: 4 records -> 4 events" in stderr
    assert sorted((decode(m.value()).target.name, decode(m.value()).source_seq) for m in msgs) == [
        ("app-0001", 1), ("app-0001", 2), ("app-0001", 3), ("app-0002", 1)]


def test_a_broken_connector_is_one_line_and_commits_nothing(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "broken_connector.py").write_text(
        "from pipeline import connect as c\n"
        "class Broken:\n"
        "    name, instance = 'broken', 'x'\n"
        "    def __init__(self, fail='fetch'):\n"
        "        self.fail = fail\n"
        "    def fetch(self, cursor):\n"
        "        yield c.record({'n': 1}, cursor=1, origin='n#1')\n"
        "        if self.fail == 'fetch':\n"
        "            raise ConnectionError('api down')\n"
        "    def to_events(self, rec):\n"
        "        if self.fail == 'convert':\n"
        "            raise RuntimeError('bug in to_events')\n"
        "        return [c.envelope(source='broken', identity=[1], type='deploy.done', time=0,\n"
        "                           actor=c.actor(None), target=c.target('svc', 'x'), action='deploy')]\n")
    stack.env["PYTHONPATH"] = str(tmp_path)
    fetch = stack.cli("ingest", "plugin", "broken_connector:Broken")
    assert fetch.returncode == 2 and "Traceback" not in fetch.stderr
    assert "broken: fetch from cursor null failed: ConnectionError: api down" in " ".join(fetch.stderr.split())
    bug = stack.cli("ingest", "plugin", "broken_connector:Broken", "-o", "fail=convert")
    assert bug.returncode == 2 and "Traceback" not in bug.stderr
    assert "connector 'broken' failed: RuntimeError: bug in to_events" in " ".join(bug.stderr.split())
    assert stack.read_topic(stack.settings.topic_dlq, expected=0, timeout=5) == []
    assert stack.read_topic(stack.settings.topic_changes, expected=0, timeout=5) == []


# -- CloudEvents over HTTP -----------------------------------------------------------------------


class Receiver:
    def __init__(self, stack: Stack, token_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = stack.home / "cloudevents.log"
        self.log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "pipeline.cli.main", "ingest", "cloudevents", "--listen",
               f"127.0.0.1:{self.port}", "--token-file", str(token_file), "--scope", "acme"]
        self.proc = subprocess.Popen(cmd, env=stack.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while self.curl("-X", "GET", self.url + "health")[0] != 200:
            assert self.proc.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.2)

    def curl(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args], capture_output=True,
                              text=True, timeout=30)
        body, _, code = done.stdout.rpartition("\n")
        return int(code or 0), (json.loads(body) if body.strip() else {})

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        finally:
            self.log.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_cloudevents_land_in_the_timeline_and_refusals_produce_nothing(stack: Stack, tmp_path: Path) -> None:
    from pipeline import tokens as token_store

    # The deployment's own token file, as `causelog token create` writes it.
    tokens = stack.settings.tokens_path
    ingest_token = token_store.create(tokens, "deploybot", "ingest")
    reader_token = token_store.create(tokens, "reader", "reader")
    stack.start_worker()
    receiver = Receiver(stack, tokens)
    auth = ["-H", f"Authorization: Bearer {ingest_token}"]
    try:
        # Binary mode: attributes in ce-* headers, the body is the data.
        binary = receiver.curl(receiver.url, *auth, "-H", "ce-specversion: 1.0", "-H", "ce-id: deploy-881",
                               "-H", "ce-source: /deploybot/api", "-H", "ce-type: deploy.succeeded",
                               "-H", "ce-time: 2026-11-27T01:24:47Z", "-H", "ce-subject: api",
                               "-H", "ce-authtype: user", "-H", "ce-authid: dave@acme.io",
                               "-H", f"ce-links: commit:{SHA}", "-H", "Content-Type: application/json",
                               "-d", '{"replicas": 3}')
        # Structured mode: the whole event is the body.
        event = {"specversion": "1.0", "id": "cfg-12", "source": "/configbot", "type": "config.changed",
                 "time": "2026-11-27T01:47:03Z", "subject": "orders-db", "targetkind": "database",
                 "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                 "data": {"before": {"max_connections": 200}, "after": {"max_connections": 50}}}
        structured = receiver.curl(receiver.url, *auth, "-H", "Content-Type: application/cloudevents+json",
                                   "-d", json.dumps(event))
        batch = [dict(event, id=f"b-{i}", time=f"2026-11-27T01:5{i}:00Z") for i in range(3)]
        batched = receiver.curl(receiver.url, *auth, "-H", "Content-Type: application/cloudevents-batch+json",
                                "-d", json.dumps(batch))
        assert [binary, structured, batched] == [(200, {"ok": True, "events": n, "rejected": 0}) for n in (1, 1, 3)]

        # Refused: no token, a token without the ingest role, another media type, an invalid event,
        # and a batch holding one invalid event (nothing of it stored).
        body = json.dumps(dict(event, id="refused"))
        assert receiver.curl(receiver.url, "-H", "Content-Type: application/cloudevents+json", "-d", body)[0] == 401
        assert receiver.curl(receiver.url, "-H", f"Authorization: Bearer {reader_token}",
                             "-H", "Content-Type: application/cloudevents+json", "-d", body)[0] == 401
        assert receiver.curl(receiver.url, *auth, "-H", "Content-Type: text/plain", "-d", body)[0] == 415
        invalid = receiver.curl(receiver.url, *auth, "-H", "Content-Type: application/cloudevents+json",
                                "-d", json.dumps(dict(event, specversion="0.3")))
        assert (invalid[0], invalid[1]["error"], invalid[1]["field"]) == (400, "invalid_value", "$.specversion")
        half = receiver.curl(receiver.url, *auth, "-H", "Content-Type: application/cloudevents-batch+json",
                             "-d", json.dumps([dict(event, id="half-1"), dict(event, id="half-2", type="")]))
        assert (half[0], half[1]["field"]) == (400, "$[1].type")
    finally:
        receiver.stop()

    stack.wait_rows(5)
    rows = json_rows(stack.cli("timeline", "--since", "2026-11-27 01:00", "--until", "2026-11-27 02:00", "--json",
                               check=True).stdout)
    assert [(r["type"], r["target_id"]) for r in rows] == [
        ("deploy.succeeded", "api"), ("config.changed", "orders-db"),
        ("config.changed", "orders-db"), ("config.changed", "orders-db"), ("config.changed", "orders-db")]
    assert rows[0]["actor_id"] == "dave@acme.io" and f"commit:{SHA}" in rows[0]["links"]
    assert "trace:4bf92f3577b34da6a3ce929d0e0e4736" in rows[1]["links"]
    # Nothing of the refused requests (read_topic waits a little past 5 to catch extras).
    assert len(stack.read_topic(stack.settings.topic_changes, expected=5, timeout=20)) == 5
    dlq = stack.read_topic(stack.settings.topic_dlq, expected=2, timeout=20)
    assert sorted(header(m, "field") or "" for m in dlq) == ["$.specversion", "$[1].type"]
    text = stack.cli("timeline", "--since", "2026-11-27 01:00", "--until", "2026-11-27 02:00", check=True).stdout
    assert "deploy.succeeded" in text and "dave@acme.io" in text


def test_webhook_mapping_imports_saved_bodies_once(stack: Stack, tmp_path: Path) -> None:
    bodies = tmp_path / "jenkins"
    bodies.mkdir()
    for n, (phase, status) in enumerate([("STARTED", None), ("COMPLETED", "SUCCESS"), ("FINALIZED", "SUCCESS")]):
        build = {"full_url": "http://ci.acme.io/job/api/7/", "number": 7, "phase": phase, "timestamp": 1795740000000,
                 "duration": 61000, "url": "job/api/7/", "scm": {"commit": SHA, "branch": "origin/main"}}
        if status:
            build["status"] = status
        (bodies / f"{n}.json").write_text(json.dumps({"name": "api", "url": "job/api/", "build": build}))
    (bodies / "3.json").write_text(json.dumps({"name": "api", "build": {"phase": "COMPLETED"}}))  # no number
    first = stack.cli("ingest", "webhook", "--map", "jenkins", "--file", str(bodies))
    assert first.returncode == 1 and "4 records -> 3 events" in first.stderr and "missing_field 1" in first.stderr
    again = stack.cli("ingest", "webhook", "--map", "jenkins", "--file", str(bodies))
    assert again.returncode == 0 and "0 records -> 0 events" in again.stderr
    events = [decode(m.value()) for m in stack.read_topic(stack.settings.topic_changes, expected=3, timeout=30)]
    assert sorted(e.type for e in events) == ["ci.run.completed", "ci.run.finalized", "ci.run.started"]
    assert all(e.links == (f"commit:{SHA}",) for e in events)
    [dead] = stack.read_topic(stack.settings.topic_dlq, expected=1, timeout=20)
    assert header(dead, "field") == "id[1]" and header(dead, "origin").endswith("3.json")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_argocd_notification_through_the_shipped_mapping(stack: Stack, tmp_path: Path) -> None:
    from pipeline.sources.http_auth import hash_token

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([{"name": "argocd", "sha256": hash_token("argo-token"), "roles": ["ingest"]}]))
    port = free_port()
    log = (tmp_path / "webhook.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "ingest", "webhook", "--map", "argocd",
                             "--listen", f"127.0.0.1:{port}", "--token-file", str(tokens)],
                            env=stack.env, stdout=log, stderr=subprocess.STDOUT)
    body = {"app": "api", "namespace": "argocd", "project": "default", "uid": "u-1", "phase": "Failed",
            "message": "one or more objects failed to apply", "startedAt": "2026-11-27T01:20:00Z",
            "finishedAt": "2026-11-27T01:21:10Z", "revision": SHA, "initiatedBy": "carol@acme.io",
            "automated": "false", "health": "Degraded", "sync": "OutOfSync", "repoURL": "https://github.com/acme/api",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "prod"},
            "url": "https://argocd.acme.io/applications/api"}

    def curl(*args: str) -> int:
        done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/",
                               *args], capture_output=True, text=True, timeout=30)
        return int(done.stdout or 0)

    try:
        deadline = time.monotonic() + 30
        while curl("-X", "GET") != 404:  # up (GET / is not a route; /health is)
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "webhook.log").read_text()
            time.sleep(0.2)
        json_body = ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        assert curl(*json_body) == 401
        assert curl("-H", "Authorization: Bearer argo-token", *json_body) == 200
        assert curl("-H", "Authorization: Bearer argo-token", *json_body) == 200  # redelivery: same id
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()
    msgs = stack.read_topic(stack.settings.topic_changes, expected=2, timeout=30)
    events = [decode(m.value()) for m in msgs]
    assert len(events) == 2 and events[0].id == events[1].id
    e = events[0]
    assert (e.type, e.outcome, e.actor.id, e.target.id) == ("deploy.failed", "failure", "carol@acme.io", "argocd/api")
    assert e.links == (f"commit:{SHA}", f"deploy:argocd:argocd/api:{SHA}")
