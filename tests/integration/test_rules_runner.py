"""``causelog rules run`` on a real broker: alerts exactly once across a restart, state restored
from the committed changelog, bad records to the DLQ."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson
import pytest
from confluent_kafka import Producer
from kafka_stack import Stack, header

from pipeline.rules.engine import Engine, Item, encode_item, fmt_us
from pipeline.rules.loader import load
from pipeline.rules.offline import evaluate_items
from pipeline.stream.rules_runner import run_rules

pytestmark = pytest.mark.integration

RULES = """\
title: failed login
id: 11111111-1111-4111-8111-111111111111
name: failed_login
logsource: {product: causelog}
detection:
    selection: {type: iam.login, outcome: failure}
    condition: selection
level: low
---
title: brute force
id: 22222222-2222-4222-8222-222222222222
correlation:
    type: event_count
    rules: [failed_login]
    group-by: [actor.id]
    timespan: 10m
    condition: {gte: 3}
    generate: true
level: high
---
title: ddl without deploy
id: absence-ddl
logsource: {product: causelog}
absence:
    after: {type: db.ddl}
    expect: {type: deploy.succeeded}
    join: chain
    within: 30m
level: high
"""

T0 = 1_764_200_000 * 1_000_000
MIN = 60_000_000


def _items() -> list[tuple[bytes, Item]]:
    out = []
    for i in range(60):
        scope = f"s{i % 3}"
        typ, outcome = ("iam.login", "failure") if i % 4 else ("db.ddl", "success")
        env = {"id": f"e{i:03d}", "time": fmt_us(T0 + i * MIN), "type": typ, "outcome": outcome,
               "source": "okta://acme", "scope": scope, "action": "x",
               "actor": {"id": f"user{i % 2}", "assurance": "authenticated"}, "target": {"id": "t"}, "links": []}
        out.append((scope.encode(), Item(event=env, chain_id=f"c{i}", person=f"user{i % 2}")))
    return out


def _produce(stack: Stack, records: list[tuple[bytes, bytes]]) -> None:
    p = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value in records:
        p.produce(stack.settings.topic_chains, value, key=key)
    assert p.flush(60) == 0


def _expected(engine: Engine, records: list[tuple[bytes, Item]]) -> set[str]:
    """The alerts of one state over every event in time order (``rules test``): what the runner's
    two stages give whatever partitions the events are spread over."""
    return {a.id for a in evaluate_items(engine, [i for _, i in records])}


def test_alerts_exactly_once_across_a_restart(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yml").write_text(RULES)
    rs = load([tmp_path / "rules"], builtin=False)
    assert not rs.problems
    engine = Engine(rs)
    records = _items()
    _produce(stack, [(k, encode_item(i)) for k, i in records[:40]] + [(b"s0", b"{not json")]
             + [(k, encode_item(i)) for k, i in records[40:]])

    stored: list = []
    first = run_rules(stack.settings, engine, batch=7, within=0.5, max_batches=3, on_alerts=stored.extend)
    assert first.commits == 3 and first.restored == {}
    second = run_rules(stack.settings, engine, batch=7, within=0.5, once=True, on_alerts=stored.extend)
    assert second.restored  # the state of the first run came back from the changelog
    assert first.records + second.records == len(records) + 1
    assert first.rejected + second.rejected == 1

    msgs = stack.read_topic(stack.settings.topic_alerts, first.alerts + second.alerts)
    got = [orjson.loads(m.value()) for m in msgs]
    assert len(got) == first.alerts + second.alerts == len(stored)
    assert len({a["id"] for a in got}) == len(got)  # nothing twice
    assert {a["id"] for a in got} == {a.id for a in stored}

    # An uninterrupted evaluation of the same events gives exactly these alerts.
    assert {a["id"] for a in got} == _expected(engine, records)
    kinds = {a["kind"] for a in got}
    assert kinds == {"detection", "correlation", "absence"}

    (dlq,) = stack.read_topic(stack.settings.topic_dlq, 1)
    assert dlq.value() == b"{not json" and header(dlq, "reason") == "invalid_value"
    assert "not a chains record" in (header(dlq, "error") or "")

    # A third run has nothing left to do and repeats nothing.
    third = run_rules(stack.settings, engine, batch=7, within=0.5, once=True)
    assert (third.records, third.alerts) == (0, 0)
    assert msgspec.json.decode(msgs[0].value())["rule_id"]


def test_alerts_committed_but_not_handed_over_before_a_crash_come_back_at_restart(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yml").write_text(RULES)
    engine = Engine(load([tmp_path / "rules"], builtin=False))
    records = _items()
    _produce(stack, [(k, encode_item(i)) for k, i in records])

    class Killed(Exception):
        pass

    def killed(alerts: list) -> None:  # the process dies right after the commit, before storing
        raise Killed

    with pytest.raises(Killed):
        run_rules(stack.settings, engine, batch=7, within=0.5, on_alerts=killed)
    restored: list = []
    stored: list = []
    run_rules(stack.settings, engine, batch=7, within=0.5, once=True, on_alerts=stored.extend,
              on_restored=restored.extend)
    assert restored  # the first transaction's alerts, handed over now
    assert not {a.id for a in restored} & {a.id for a in stored}
    assert {a.id for a in restored} | {a.id for a in stored} == _expected(engine, records)


# -- through a real worker --------------------------------------------------------------------

UNREVIEWED = "d9a89ab9-fd82-4c19-993c-8f16aa0eadbc"  # built-in: deploy whose chain has no approved review


def _env(eid: str, minute: int, typ: str, action: str, links: list[str], actor: str = "github:erin") -> bytes:
    from pipeline.model import decode_dict, encode

    return encode(decode_dict({
        "specversion": "1.0", "id": eid, "source": "causelog://test", "type": typ,
        "time": fmt_us(T0 + minute * MIN), "scope": "acme", "action": action, "outcome": "success",
        "actor": {"id": actor, "kind": "human", "assurance": "mfa"},
        "target": {"kind": "service", "id": "svc-api", "environment": "prod"}, "links": links,
    }))


def test_worker_chains_feed_the_rules_runner_and_alerts_are_stored_once(stack: Stack) -> None:
    """envelopes -> worker -> <prefix>.chains (the worker's chain ids and persons) -> `causelog rules
    run` -> alerts table, read back with `causelog alerts`; a restart of the runner repeats nothing."""
    from kafka_stack import json_rows

    (stack.home / "identities.yaml").write_text("people:\n  erin:\n    principals: [github:erin]\n")
    commit = {k: f"commit:{k * 40}" for k in "abcd"}
    part1 = [
        _env("review-a", 0, "change.reviewed", "approved", ["change:acme/api#1"]),
        _env("ci-a", 2, "build.succeeded", "build", ["change:acme/api#1", commit["a"]]),
        # Chained to the review only through the CI run: the worker's chain, not a shared link.
        _env("deploy-a", 5, "deploy.succeeded", "deploy", [commit["a"]]),
        _env("deploy-b", 6, "deploy.succeeded", "deploy", [commit["b"]], actor="github:mallory"),
    ]
    stack.produce(part1 + part1[3:])  # deploy-b twice: the duplicate is not on <prefix>.chains
    stack.start_worker()
    assert len(stack.read_topic(stack.settings.topic_chains, 4)) == 4
    stack.cli("rules", "run", "--once", check=True)

    part2 = [
        _env("deploy-c", 10, "deploy.succeeded", "deploy", [commit["c"]]),
        _env("review-d", 11, "change.reviewed", "approved", [commit["d"]]),
        _env("deploy-d", 12, "deploy.succeeded", "deploy", [commit["d"]]),
    ]
    stack.produce(part2)
    assert len(stack.read_topic(stack.settings.topic_chains, 7)) == 7
    stack.cli("rules", "run", "--once", check=True)
    stack.cli("rules", "run", "--once", check=True)  # nothing left: repeats nothing

    got = json_rows(stack.cli("alerts", "--rule", UNREVIEWED, "--json", check=True).stdout)
    assert sorted(a["event_ids"][0] for a in got) == ["deploy-b", "deploy-c"]
    chain = dict(stack.sql("SELECT id, chain_id FROM DB.v_event_chains"))
    assert chain["deploy-a"] == chain["review-a"] != chain["deploy-b"]
    stored = dict(stack.sql("SELECT id, chain_id FROM DB.events"))
    for a in got:
        assert a["chain_id"] == stored[a["event_ids"][0]]
    person = {a["event_ids"][0]: a["person"] for a in got}
    assert person == {"deploy-b": None, "deploy-c": "erin"}
    on_topic = [orjson.loads(m.value()) for m in stack.read_topic(stack.settings.topic_alerts, len(got))]
    assert sorted(a["id"] for a in on_topic if a["rule_id"] == UNREVIEWED) == sorted(a["id"] for a in got)
    assert len({a["id"] for a in on_topic}) == len(on_topic)
