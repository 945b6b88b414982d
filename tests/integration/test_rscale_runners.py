"""Rules runners scaled out on a real broker: a group spread over chains partitions meets in one
state (repartition topic), two runners of one group share the partitions, and neither a second
runner joining nor a kill -9 and restart changes an alert."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka_stack import Stack

from pipeline.rules.engine import Engine, Item, encode_item, fmt_us
from pipeline.rules.loader import load
from pipeline.rules.offline import evaluate_items
from pipeline.stream.rules_runner import RunReport, repartition_topic, run_rules

pytestmark = pytest.mark.integration

BRUTE = "22222222-2222-4222-8222-222222222222"
RULES = """\
title: schema change
id: 33333333-3333-4333-8333-333333333333
logsource: {product: causelog}
detection:
    selection: {type: db.ddl, target.service: svc1}
    condition: selection
level: low
---
title: failed login
id: 11111111-1111-4111-8111-111111111111
name: failed_login
logsource: {product: causelog}
detection:
    selection: {type: iam.login, outcome: failure}
    condition: selection
---
title: brute force
id: 22222222-2222-4222-8222-222222222222
correlation:
    type: event_count
    rules: [failed_login]
    group-by: [actor.id]
    timespan: 10m
    condition: {gte: 3}
level: high
---
title: ddl without deploy of the service
id: absence-ddl
logsource: {product: causelog}
absence:
    after: {type: db.ddl}
    expect: {type: deploy.succeeded}
    join: [target.service]
    within: 30m
level: high
---
title: quiet okta
id: quiet-okta
silence: {source: 'okta://*', for: 15m, min_events: 5, baseline: 20m}
"""

T0 = 1_764_200_000 * 1_000_000
MIN = 60_000_000


def _engine(tmp_path: Path) -> Engine:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.yml").write_text(RULES)
    rs = load([tmp_path / "rules"], builtin=False)
    assert not rs.problems
    return Engine(rs)


def _event(i: int, minute: float, scope: str, typ: str, actor: str, *, outcome: str = "failure",
           source: str = "okta://acme", service: str = "api") -> tuple[bytes, Item]:
    env = {"id": f"e{i:04d}", "time": fmt_us(T0 + int(minute * MIN)), "type": typ, "outcome": outcome,
           "source": source, "scope": scope, "action": "x", "actor": {"id": actor},
           "target": {"id": "t", "service": service}, "links": []}
    return scope.encode(), Item(event=env, chain_id=f"{scope}-c{i}", person=None)


def _scenario(n: int = 160) -> list[tuple[bytes, Item]]:
    """Events of 6 scopes (so over the chains partitions), in time order: failed logins of 3 actors
    from every scope, DDL and deploys of 2 services, an okta source that goes quiet twice."""
    out = []
    minute = 0.0
    for i in range(n):
        minute += 1.5 if i % 40 else 35  # gaps: the silence fires, absences run out
        scope = f"s{i % 6}"
        kind = i % 5
        if kind in (0, 1, 2):
            out.append(_event(i, minute, scope, "iam.login", f"user{(i // 10) % 3}"))
        elif kind == 3:
            out.append(_event(i, minute, scope, "db.ddl", "dba", outcome="success", source="github://acme",
                              service=f"svc{i % 2}"))
        else:
            out.append(_event(i, minute, scope, "deploy.succeeded", "ci", outcome="success", source="github://acme",
                              service=f"svc{(i // 5) % 2}"))
    return out


def _produce(stack: Stack, records: list[tuple[bytes, Item]]) -> None:
    p = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, item in records:
        p.produce(stack.settings.topic_chains, encode_item(item), key=key)
    assert p.flush(60) == 0


def _partitions_of(stack: Stack, records: list[tuple[bytes, Item]]) -> dict[bytes, int]:
    return {m.key(): m.partition() for m in stack.read_topic(stack.settings.topic_chains, len(records))}


def _alerts_on_topic(stack: Stack, expected: int) -> list[dict]:
    return [orjson.loads(m.value()) for m in stack.read_topic(stack.settings.topic_alerts, expected, timeout=90)]


def _lag(stack: Stack, group: str) -> int:
    """Records of both input topics not yet committed by ``group`` (transaction markers included)."""
    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        lag = 0
        for topic in (stack.settings.topic_chains, repartition_topic(stack.settings, group)):
            md = c.list_topics(topic, timeout=30).topics[topic]
            tps = [TopicPartition(topic, p) for p in md.partitions]
            for tp in c.committed(tps, timeout=30):
                low, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=30)
                lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        c.close()


def _diff(engine: Engine, records: list[tuple[bytes, Item]], got: list[dict]) -> str:
    """What differs from one state over all events in time order, for a failure message."""
    ref = {a.id: a for a in evaluate_items(engine, [i for _, i in records])}
    have = {a["id"]: a for a in got}
    return "; ".join([f"missing {a.kind} {a.rule_id} {a.event_ids} {a.time}" for i, a in ref.items() if i not in have]
                     + [f"extra {a['kind']} {a['rule_id']} {a['event_ids']} {a['time']}" for i, a in have.items()
                        if i not in ref])


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_group_by_correlation_over_several_chains_partitions_fires_exactly_once(stack: Stack, tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    # mallory fails to log in from three scopes within 3 minutes: three different chains partitions.
    scopes = ["s0", "s1", "s2", "s3", "s4", "s5"]
    records = [_event(i, i, scopes[i], "iam.login", "mallory", source="github://x") for i in range(6)]
    _produce(stack, records)
    partition_of = _partitions_of(stack, records)
    assert len(set(partition_of.values())) >= 2
    stored: list = []
    report = run_rules(stack.settings, engine, once=True, on_alerts=stored.extend)
    assert report.records == 6 and report.routed > 0
    got = _alerts_on_topic(stack, 2)
    brute = [a for a in got if a["rule_id"] == BRUTE]
    # six failures: two windows of three, each one alert, each naming events of several partitions
    assert len(brute) == 2 and len({a["id"] for a in brute}) == 2
    assert sorted(e for a in brute for e in a["event_ids"]) == [f"e{i:04d}" for i in range(6)]
    assert any(len({partition_of[f"s{int(e[1:])}".encode()] for e in a["event_ids"]}) >= 2 for a in brute)
    assert {a["id"] for a in got} == {a.id for a in evaluate_items(engine, [i for _, i in records])}
    # nothing left, nothing repeated
    again = run_rules(stack.settings, engine, once=True)
    assert (again.records, again.alerts) == (0, 0)


def _runner(stack: Stack, engine: Engine, group: str, stop: threading.Event, report: RunReport,
            errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            run_rules(stack.settings, engine, group=group, stop=stop, report=report, batch=50, within=0.3)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_second_runner_joining_changes_no_alert(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.stream import rules_runner

    monkeypatch.setattr(rules_runner, "PURGE_EVERY", 0.0)  # consumed repartition records go at once
    engine = _engine(tmp_path)
    records = _scenario()
    expected = {a.id for a in evaluate_items(engine, [i for _, i in records])}
    kinds = {a.kind for a in evaluate_items(engine, [i for _, i in records])}
    assert kinds == {"detection", "correlation", "absence", "silence"}
    group = f"{stack.settings.group}-two"
    half = len(records) // 2
    _produce(stack, records[:half])
    stops = [threading.Event(), threading.Event()]
    reports = [RunReport(), RunReport()]
    errors: list[BaseException] = []
    threads = [_runner(stack, engine, group, stops[0], reports[0], errors)]
    _wait(lambda: reports[0].records >= half // 2 or bool(errors), 60, "the first runner to start")
    threads.append(_runner(stack, engine, group, stops[1], reports[1], errors))  # a rebalance mid-stream
    _wait(lambda: reports[1].commits > 0 or bool(reports[1].restored) or bool(errors), 60,
          "the second runner to get partitions")
    _produce(stack, records[half:])
    settled: list[int] = []  # done: nothing left to commit for a while (the last idle ticks sent and evaluated)

    def done() -> bool:
        settled.append(_lag(stack, group) if sum(r.records for r in reports) >= len(records) else -1)
        return bool(errors) or settled[-4:] == [0, 0, 0, 0]

    _wait(done, 120, "both runners to finish")
    for s in stops:
        s.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert reports[0].records > 0 and reports[1].records > 0  # they shared the partitions
    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": "lows"})
    repart = repartition_topic(stack.settings, group)
    lows = [c.get_watermark_offsets(TopicPartition(repart, p), timeout=30)[0] for p in range(4)]
    c.close()
    assert all(low > 0 for low in lows), lows  # what was consumed is deleted
    assert sum(r.records for r in reports) == len(records)  # each chains record evaluated once
    got = _alerts_on_topic(stack, len(expected))
    assert len(got) == len({a["id"] for a in got})  # nothing twice
    assert {a["id"] for a in got} == expected, _diff(engine, records, got)
    # A single uninterrupted runner (another group) on the same input: the same alerts.
    single: list = []
    run_rules(stack.settings, engine, group=f"{stack.settings.group}-single", once=True, on_alerts=single.extend)
    assert sorted(a.id for a in single) == sorted(expected)


class _Stalling(Engine):
    """Stalls in the middle of one batch (on event ``at``) until ``go`` is set."""

    def __init__(self, rules, at: str, stalled: threading.Event, go: threading.Event) -> None:  # type: ignore[no-untyped-def]
        super().__init__(rules)
        self.at, self.stalled, self.go = at, stalled, go

    def route(self, state, item, watermark):  # type: ignore[no-untyped-def]
        if item.event["id"] == self.at and not self.go.is_set():
            self.stalled.set()
            self.go.wait(60)
        return super().route(state, item, watermark)


def test_a_runner_that_lost_its_partitions_mid_batch_aborts(stack: Stack, tmp_path: Path) -> None:
    """Runner A stalls mid-batch past max.poll.interval.ms: the group gives its partitions to B. When
    A goes on, its commit is refused (KIP-447: the group generation moved on): it aborts, so
    nothing of its batch is visible, B's evaluation stands, and no alert is lost or doubled."""
    engine = _engine(tmp_path)
    records = _scenario()
    expected = {a.id for a in evaluate_items(engine, [i for _, i in records])}
    _produce(stack, records)
    group = f"{stack.settings.group}-lost"
    stalled, go, stops, errors = threading.Event(), threading.Event(), [threading.Event(), threading.Event()], []
    reports = [RunReport(), RunReport()]
    stalling = _Stalling(engine.rules, records[0][1].event["id"], stalled, go)

    def run_a() -> None:
        try:
            run_rules(stack.settings, stalling, group=group, stop=stops[0], report=reports[0], batch=50, within=0.3,
                      consumer_config={"session.timeout.ms": 6000, "max.poll.interval.ms": 6000})
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=run_a, daemon=True)
    a.start()
    _wait(lambda: stalled.is_set() or bool(errors), 60, "runner A to stall mid-batch")
    b = _runner(stack, engine, group, stops[1], reports[1], errors)
    # B evaluates everything A had not committed before it stalled (A's stalled batch included)
    _wait(lambda: reports[0].records + reports[1].records >= len(records) or bool(errors), 90,
          "runner B to evaluate everything")
    go.set()  # A goes on with a batch whose partitions are B's now
    _wait(lambda: reports[0].aborted > 0 or bool(errors), 60, "runner A to abort its transaction")
    settled: list[int] = []

    def done() -> bool:
        settled.append(_lag(stack, group))
        return bool(errors) or settled[-4:] == [0, 0, 0, 0]

    _wait(done, 90, "both runners to finish")
    for s in stops:
        s.set()
    a.join(60)
    b.join(60)
    assert not errors, errors
    got = _alerts_on_topic(stack, len(expected))
    assert len(got) == len({x["id"] for x in got})  # A's batch is not visible
    assert {x["id"] for x in got} == expected, _diff(engine, records, got)


RUNNER = """\
import sys
from pathlib import Path
from pipeline.rules.engine import Engine
from pipeline.rules.loader import load
from pipeline.settings import load as settings
from pipeline.stream.rules_runner import run_rules

engine = Engine(load([Path(sys.argv[1])], builtin=False))
run_rules(settings(), engine, group=sys.argv[2], once=sys.argv[3] == "once", batch=20, within=0.2,
          on_alerts=lambda alerts: print("committed", len(alerts), flush=True))
"""


def test_kill_9_mid_run_and_restart_changes_no_alert(stack: Stack, tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    records = _scenario()
    expected = {a.id for a in evaluate_items(engine, [i for _, i in records])}
    _produce(stack, records)
    group = f"{stack.settings.group}-kill"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    log = (tmp_path / "runner.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "rules"), group, "live"], env=stack.env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: (tmp_path / "runner.log").read_text().count("committed") >= 3 or proc.poll() is not None, 90,
              "the runner to commit alerts")
        assert proc.poll() is None, (tmp_path / "runner.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: between or inside transactions
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _lag(stack, group) > 0  # it was killed before the end
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "rules"), group, "once"], env=stack.env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    got = _alerts_on_topic(stack, len(expected))
    assert len(got) == len({a["id"] for a in got})  # the killed runner's open transaction is aborted
    assert {a["id"] for a in got} == expected
