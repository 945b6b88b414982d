"""HTTP receivers over real HTTP against the real broker: GitHub webhooks (signature, events,
DLQ) and the Kubernetes audit webhook (EventList batches, same ids on redelivery)."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_stack import Stack, free_port, header

from pipeline.model import decode, event_id

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OCTOKIT = DATA / "git" / "octokit-webhooks"
FALCO = DATA / "config" / "falco-k8s-audit"
SECRET = "integration-test-secret"


def _wired(command: str) -> bool:
    """True once the lead wired ``--listen`` into ``causelog ingest <command>``."""
    from pipeline.cli import ingest

    cmd = ingest.ingest.commands.get(command)
    return cmd is not None and any(p.name == "listen" for p in cmd.params)


class Server:
    """A receiver subprocess on a free port."""

    def __init__(self, stack: Stack, kind: str) -> None:
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.log_path = stack.home / f"{kind}.log"
        env = dict(stack.env, HOOK_SECRET=SECRET)
        if kind == "github-webhook":
            cli = ["--listen", self.listen, "--secret-env", "HOOK_SECRET"]
            code = "serve_github(load(), sys.argv[1], 'HOOK_SECRET', None)"
        else:
            cli = ["--listen", self.listen, "--cluster", "it"]
            code = "serve_k8s(load(), sys.argv[1], None, 'it')"
        if _wired(kind):
            cmd = [sys.executable, "-m", "pipeline.cli.main", "ingest", kind, *cli]
        else:
            cmd = [sys.executable, "-c", "import sys; from pipeline.settings import load; "
                   f"from pipeline.cli.ingest_listen import serve_github, serve_k8s; {code}", self.listen]
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"receiver exited {self.proc.returncode}:\n{self.tail()}"
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"receiver not healthy after 30s:\n{self.tail()}")

    def tail(self, limit: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-limit:]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, orjson.loads(data) if data else {}
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"receiver ignored SIGTERM:\n{self.tail()}") from None
        finally:
            self.log.close()


@pytest.fixture
def github(stack: Stack) -> Iterator[Server]:
    server = Server(stack, "github-webhook")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def k8s(stack: Stack) -> Iterator[Server]:
    server = Server(stack, "k8s-audit")
    try:
        yield server
    finally:
        server.stop()


def _sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _offsets(stack: Stack, topic: str) -> int:
    """Sum of high watermarks: every record ever written, committed, aborted or open."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": "probe"})
    try:
        md = c.list_topics(topic, timeout=10)
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.topics[topic].partitions)
    finally:
        c.close()


def test_github_webhooks_signed_accepted_unsigned_refused(stack: Stack, github: Server) -> None:
    if not OCTOKIT.is_dir() or not any(OCTOKIT.rglob("*.json")):
        pytest.skip(f"octokit webhook payloads not found at {OCTOKIT}")
    s = stack.settings
    sample = (OCTOKIT / "push" / "payload.json").read_bytes()

    # Refused before anything is parsed or produced: tampered body, wrong secret, no or bad signature.
    tampered = sample.replace(b'"', b"'", 1)
    for body, sig in [(tampered, _sign(sample)), (sample, _sign(sample, "wrong secret")), (sample, None),
                      (sample, "sha1=" + hashlib.sha1(sample).hexdigest())]:  # noqa: S324 - a wrong algorithm on purpose
        headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4())}
        if sig is not None:
            headers["X-Hub-Signature-256"] = sig
        status, answer = github.request("POST", "/", body, headers)
        assert (status, answer["error"]) == (401, "unauthorized")
    assert _offsets(stack, s.topic_changes) == 0 and _offsets(stack, s.topic_dlq) == 0

    # Bad JSON with a valid signature: 400 and one DLQ record with the reason.
    bad = b'{"ref": "refs/heads/main", '
    status, answer = github.request("POST", "/", bad, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "bad-1",
                                                       "X-Hub-Signature-256": _sign(bad)})
    assert (status, answer["error"]) == (400, "bad_json")

    # Every real payload, signed, sent by 8 senders at once: all 200, all in Kafka (committed).
    files = sorted(OCTOKIT.rglob("*.json"))
    deliveries = {str(uuid.uuid4()): f for f in files}

    def deliver(item: tuple[str, Path]) -> tuple[str, int, dict[str, Any]]:
        delivery, path = item
        body = path.read_bytes()
        status, answer = github.request("POST", "/hook", body, {
            "Content-Type": "application/json", "X-GitHub-Event": path.parent.name,
            "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": _sign(body)})
        return delivery, status, answer

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(deliver, deliveries.items()))
    failed = [(deliveries[d].relative_to(OCTOKIT), st, a) for d, st, a in results if st != 200]
    assert not failed, failed[:5]
    assert all(a["events"] == 1 for _, _, a in results)

    msgs = stack.read_topic(s.topic_changes, expected=len(files), timeout=30)
    events = [decode(m.value()) for m in msgs]
    assert len(events) == len(files)
    assert {e.id for e in events} == {event_id("github", d) for d in deliveries}
    assert all(m.key() == s.scope.encode() for m in msgs)

    dlq = stack.read_topic(s.topic_dlq, expected=1, timeout=15)
    assert len(dlq) == 1
    assert dlq[0].value() == bad and dlq[0].key() == b"github-webhook:delivery:bad-1"
    assert header(dlq[0], "reason") == "bad_json" and header(dlq[0], "source") == "github-webhook"

    assert github.request("GET", "/health")[0] == 200
    assert github.stop() == 0
    log = github.tail(10**7)
    assert " 401 POST / event=push " in log and "(refused)" in log
    assert " 400 POST / event=push delivery=bad-1 events=0 rejected=1 " in log
    assert f"stopped after {len(files) + 5} requests: {len(files)} events, 1 rejected" in log


def _falco_events() -> list[dict[str, Any]]:
    from pipeline.sources.k8s_audit import split_records

    items: list[dict[str, Any]] = []
    for path in sorted(FALCO.glob("*.json")):
        text = path.read_bytes()
        try:
            docs = [orjson.loads(text)]
        except orjson.JSONDecodeError:
            docs = [orjson.loads(line) for line in text.splitlines() if line.strip()]
        for doc in docs:
            items.extend(split_records(doc))
    return items


def test_k8s_audit_event_list_stored_and_redelivery_keeps_ids(stack: Stack, k8s: Server) -> None:
    if not FALCO.is_dir() or not any(FALCO.glob("*.json")):
        pytest.skip(f"falco Kubernetes audit samples not found at {FALCO}")
    s = stack.settings
    items = _falco_events()
    batch = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})

    status, answer = k8s.request("POST", "/", batch, {"Content-Type": "application/json"})
    assert (status, answer["events"], answer["rejected"]) == (200, len(items), 0), answer
    first = [decode(m.value()) for m in stack.read_topic(s.topic_changes, expected=len(items), timeout=30)]
    assert len(first) == len(items)
    assert sorted(e.id for e in first) == sorted(event_id("k8s-audit", i["auditID"]) for i in items)
    assert all(e.source == "k8s-audit://it" for e in first)

    # The API server retries a batch it is not sure about: same events, same ids (dedup downstream).
    status, answer = k8s.request("POST", "/", batch, {"Content-Type": "application/json"})
    assert (status, answer["events"]) == (200, len(items))
    both = [decode(m.value()) for m in stack.read_topic(s.topic_changes, expected=2 * len(items), timeout=30)]
    assert len(both) == 2 * len(items)
    # One key (the scope), so one partition: the second batch follows the first, in order.
    assert [e.id for e in both[len(items):]] == [e.id for e in first]

    # A batch that is not JSON: DLQ with the reason, 400.
    status, answer = k8s.request("POST", "/", b"{not an event list", {})
    assert (status, answer["error"]) == (400, "bad_json")
    [dlq] = stack.read_topic(s.topic_dlq, expected=1, timeout=15)
    assert header(dlq, "reason") == "bad_json" and dlq.value() == b"{not an event list"

    assert k8s.stop() == 0
    assert f"stopped after 3 requests: {2 * len(items)} events, 1 rejected" in k8s.tail()
