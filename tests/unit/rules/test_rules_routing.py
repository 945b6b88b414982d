"""Two-stage evaluation (``Engine.route`` per chains partition, ``Engine.receive`` per repartition
partition): the groups of correlations, absences and silences meet in one state whatever chains
partition their events came from, and the alerts are those of one state over all events in time
order (``evaluate_items``), however the partitions' records interleave."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pipeline.rules.engine import (
    AFTER,
    CORR,
    EXPECT,
    SOURCE,
    Engine,
    Item,
    Routed,
    State,
    decode_routed,
    decode_state,
    encode_routed,
    encode_state,
    fmt_us,
    release_watermark,
    route_key,
    route_partition,
    tick,
    time_us,
)
from pipeline.rules.loader import load
from pipeline.rules.offline import evaluate_items

MIN = 60 * 1_000_000
T0 = 1_764_000_000 * 1_000_000

FAILED = "11111111-1111-4111-8111-111111111111"
BRUTE = "22222222-2222-4222-8222-222222222222"
BRUTE_AGAIN = "33333333-3333-4333-8333-333333333333"
FEW_TARGETS = "44444444-4444-4444-8444-444444444444"

RULES = """\
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
name: brute
correlation:
    type: event_count
    rules: [failed_login]
    group-by: [actor.id]
    timespan: 10m
    condition: {gte: 3}
level: high
---
title: repeated brute force
id: 33333333-3333-4333-8333-333333333333
correlation:
    type: event_count
    rules: [brute]
    group-by: [actor.id]
    timespan: 2h
    condition: {gte: 2}
---
title: few targets
id: 44444444-4444-4444-8444-444444444444
correlation:
    type: value_count
    rules: [failed_login]
    group-by: [actor.id]
    timespan: 20m
    condition: {field: target.id, gte: 2, lte: 3}
---
title: secret read
id: 55555555-5555-4555-8555-555555555555
name: secret
logsource: {product: causelog}
detection:
    selection: {type: secret.read}
    condition: selection
---
title: role assumed
id: 66666666-6666-4666-8666-666666666666
name: role
logsource: {product: causelog}
detection:
    selection: {type: iam.role.assumed}
    condition: selection
---
title: secret then role
id: 77777777-7777-4777-8777-777777777777
correlation:
    type: temporal_ordered
    rules: [secret, role]
    group-by: [person]
    timespan: 10m
---
title: ddl without deploy
id: ddl-no-deploy
logsource: {product: causelog}
absence:
    after: {type: db.ddl}
    expect: {type: deploy.succeeded}
    join: [target.service]
    within: 30m
---
title: ddl without review in its chain
id: ddl-no-review
logsource: {product: causelog}
absence:
    after: {type: db.ddl}
    expect: {type: change.reviewed}
    join: chain
    within: 20m
---
title: deploy of an unreviewed chain
id: 88888888-8888-4888-8888-888888888888
logsource: {product: causelog}
chain: {missing: [change.reviewed]}
detection:
    selection: {type: deploy.succeeded}
    condition: selection
---
title: quiet
id: quiet
silence: {source: 'okta://*', for: 15m, min_events: 5, baseline: 20m}
"""

TYPES = ["iam.login", "iam.login", "iam.login", "secret.read", "iam.role.assumed", "db.ddl", "deploy.succeeded",
         "change.reviewed", "x.other"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    d = tmp_path_factory.mktemp("rules")
    (d / "r.yml").write_text(RULES)
    rs = load([d], builtin=False)
    assert not rs.problems, [str(p) for p in rs.problems]
    return Engine(rs)


def _scenario(seed: int, partitions: int = 3, n: int = 240) -> list[list[Item]]:
    """Events of several scopes, each scope (and so each chain) in one partition, in time order."""
    rnd = random.Random(seed)
    out: list[list[Item]] = [[] for _ in range(partitions)]
    minute = 0.0
    for i in range(n):
        minute += rnd.choice([0.25, 0.5, 1, 2, 3])
        if rnd.random() < 0.03:
            minute += 25  # gaps: silences, absences running out
        scope = rnd.randrange(partitions * 2)
        typ = rnd.choice(TYPES)
        env = {"id": f"e{i:04d}", "time": fmt_us(T0 + int(minute * MIN)), "type": typ,
               "outcome": rnd.choice(["failure", "failure", "success"]), "action": "x",
               "source": rnd.choice(["okta://acme", "okta://acme", "github://acme"]), "scope": f"s{scope}",
               "actor": {"id": f"user{rnd.randrange(3)}"}, "target": {"id": f"t{rnd.randrange(4)}",
                                                                    "service": f"svc{rnd.randrange(2)}"},
               "links": ["x:1"]}
        out[scope % partitions].append(Item(event=env, chain_id=f"s{scope}-c{rnd.randrange(4)}",
                                            person=rnd.choice([None, f"person{rnd.randrange(2)}"])))
    return out


def _ticks_everywhere(engine: Engine, parts: list[list[Item]], repart: int, seed: int,
                      restart_every: int = 0, cuts: tuple[int, ...] = ()) -> list[Any]:
    """The runner's data flow without Kafka: stage 1 batches of random sizes from random chains
    partitions, then a tick to every repartition partition; stage 2 reads random chunks of random
    repartition partitions; every state through encode/decode (a restart) now and then. ``cuts``:
    event times at which the input pauses until everything before is evaluated (partitions go
    idle, then come back)."""
    rnd = random.Random(seed)
    s1 = [State() for _ in parts]
    s2 = [State() for _ in range(repart)]
    queues: list[list[bytes]] = [[] for _ in range(repart)]
    pos = [0] * len(parts)
    idle = [False] * len(parts)
    alerts: list[Any] = []
    steps = 0
    for cut in (*cuts, 2**62):
        avail = [sum(1 for i in p if time_us(i.event["time"]) < cut) for p in parts]
        while True:
            steps += 1
            if restart_every and steps % restart_every == 0:
                s1 = [decode_state(encode_state(s)) for s in s1]
                s2 = [decode_state(encode_state(s)) for s in s2]
            todo = [p for p in range(len(parts)) if pos[p] < avail[p] or not idle[p]]
            waiting = [r for r in range(repart) if queues[r]]
            if not todo and not waiting:
                break
            if todo and (not waiting or rnd.random() < 0.5):
                p = rnd.choice(todo)
                batch = parts[p][pos[p]:min(avail[p], pos[p] + rnd.randint(0, 12))]
                pos[p] += len(batch)
                routes: list[Routed] = []
                for item in batch:
                    s1[p], out, rs = engine.route(s1[p], item, max(s1[p].watermark, time_us(item.event["time"])))
                    alerts.extend(out)
                    routes.extend(rs)
                for route in engine.coalesce(routes):
                    queues[route_partition(route, repart)].append(encode_routed(route))
                idle[p] = pos[p] >= avail[p]
                for r in range(repart):
                    queues[r].append(encode_routed(tick(p, s1[p].watermark, idle[p])))
            else:
                r = rnd.choice(waiting)
                k = rnd.randint(1, 20)
                take, queues[r] = queues[r][:k], queues[r][k:]
                for data in take:
                    s2[r], out, rs = engine.receive(s2[r], decode_routed(data), len(parts))
                    alerts.extend(out)
                    for route in rs:
                        queues[route_partition(route, repart)].append(encode_routed(route))
    return alerts


@pytest.mark.parametrize("seed", range(6))
def test_two_stages_give_the_alerts_of_one_state_in_time_order(engine: Engine, seed: int) -> None:
    parts = _scenario(seed)
    items = sorted((i for p in parts for i in p), key=lambda i: (time_us(i.event["time"]), i.event["id"]))
    reference = evaluate_items(engine, items)
    kinds = {a.kind for a in reference}
    assert kinds == {"detection", "correlation", "absence", "silence"}, kinds
    assert any(a.rule_id == BRUTE_AGAIN for a in reference) or seed != 0  # correlations of correlations
    want = sorted(msgspec.json.encode(a) for a in reference)
    middle = sorted(time_us(i.event["time"]) for i in items)[len(items) // 2]
    for order in range(4):
        # the input pausing half-way (every partition idle, then all of them back) changes nothing
        got = _ticks_everywhere(engine, parts, 4, seed * 10 + order, restart_every=order * 3,
                                cuts=(middle,) if order % 2 else ())
        assert sorted(msgspec.json.encode(a) for a in got) == want, (seed, order)


def test_a_group_spread_over_partitions_meets_in_one_state(engine: Engine) -> None:
    """Three failed logins of one actor in three chains partitions: one alert (per partition, none)."""
    parts = [[Item(event={"id": f"f{p}", "time": fmt_us(T0 + p * MIN), "type": "iam.login", "outcome": "failure",
                          "source": "github://x", "actor": {"id": "mallory"}, "target": {"id": "t"}},
                   chain_id=f"c{p}")] for p in range(3)]
    got = [a for a in _ticks_everywhere(engine, parts, 4, 1) if a.rule_id == BRUTE]
    assert len(got) == 1 and set(got[0].event_ids) == {"f0", "f1", "f2"}
    per_partition = [a for p in parts for a in evaluate_items(engine, p) if a.rule_id == BRUTE]
    assert per_partition == []


def test_route_keys_and_partitions(engine: Engine) -> None:
    item = Item(event={"id": "e1", "time": fmt_us(T0), "type": "db.ddl", "outcome": "success",
                       "source": "okta://acme", "actor": {"id": "a"}, "target": {"id": "t", "service": "api"}},
                chain_id="c1")
    state, alerts, routes = engine.route(State(), item, T0)
    assert alerts == [] and state.watermark == T0
    by_kind = {(r.kind, r.rule): r for r in routes}
    assert by_kind[(AFTER, "ddl-no-deploy")].key == '["api"]'
    assert by_kind[(AFTER, "ddl-no-review")].key == "c1"  # joined on the chain: keyed by chain id
    assert by_kind[(SOURCE, "")].key == "okta://acme"
    assert not any(r.kind == EXPECT for r in routes)
    for r in routes:
        assert route_key(r) == (r.key.encode() if r.kind == CORR else f"{r.rule}\x1f{r.key}".encode())
        assert route_partition(r, 4) == route_partition(decode_routed(encode_routed(r)), 4)
        assert 0 <= route_partition(r, 4) < 4
    # stable across processes (not Python's salted hash): a fixed value
    assert route_partition(Routed(kind=CORR, rule=BRUTE, key='{"actor.id":"a"}', t=0), 1000) == \
        route_partition(Routed(kind=CORR, rule=BRUTE, key='{"actor.id":"a"}', t=5, event_id="x"), 1000)
    spread = {route_partition(Routed(kind=CORR, rule=BRUTE, key=f'{{"actor.id":"u{i}"}}', t=0), 4)
              for i in range(50)}
    assert spread == {0, 1, 2, 3}
    failed = Item(event={**item.event, "type": "iam.login", "outcome": "failure"}, chain_id="c1", person="p")
    _, _, routes = engine.route(State(), failed, T0)
    corr = {r.rule: r for r in routes if r.kind == CORR}
    assert set(corr) == {BRUTE, FEW_TARGETS}
    assert corr[BRUTE].key == '{"actor.id":"a"}' and corr[BRUTE].by == FAILED
    assert corr[FEW_TARGETS].value == "t"


def test_source_records_coalesce_only_where_no_silence_can_fall_between(engine: Engine) -> None:
    def src(minute: float) -> Routed:
        t = T0 + int(minute * MIN)
        return Routed(kind=SOURCE, rule="", key="okta://acme", t=t, last=t)

    other = Routed(kind=CORR, rule=BRUTE, key="k", t=T0)
    out = engine.coalesce([src(0), other, src(5), src(1), src(30), src(40), src(56)])
    merged = [(r.t, r.last, r.count) for r in out if r.kind == SOURCE]
    assert merged == [(T0, T0 + 5 * MIN, 3), (T0 + 30 * MIN, T0 + 40 * MIN, 2), (T0 + 56 * MIN, T0 + 56 * MIN, 1)]
    assert other in out


def test_nothing_is_released_before_every_busy_partition_has_passed_it(engine: Engine) -> None:
    def rec(eid: str, minute: int) -> Routed:
        return Routed(kind=CORR, rule=BRUTE, key='{"actor.id":"a"}', t=T0 + minute * MIN, event_id=eid, by=FAILED)

    state, alerts, _ = engine.receive(State(), rec("e", 5), 2)
    assert state.held == [rec("e", 5)] and release_watermark(state, 2) == (0, False)
    state, _, _ = engine.receive(state, tick(0, T0 + 9 * MIN, False), 2)
    assert len(state.held) == 1  # partition 1 has not said where it is: it may be behind
    state, _, _ = engine.receive(state, rec("f", 12), 2)
    state, _, _ = engine.receive(state, tick(1, T0 + 10 * MIN, False), 2)
    assert [h.event_id for h in state.held] == ["f"]  # released up to minute 9, the slower partition
    assert release_watermark(state, 2) == (T0 + 9 * MIN, False) and state.watermark == T0 + 9 * MIN - 1
    state, _, _ = engine.receive(state, tick(1, T0 + 13 * MIN, False), 2)
    # partition 0 idle for now: it still holds the watermark (its next events may be older than 1's)
    state, _, _ = engine.receive(state, tick(0, T0 + 9 * MIN, True), 2)
    assert release_watermark(state, 2) == (T0 + 9 * MIN, False) and len(state.held) == 1
    state, _, _ = engine.receive(state, tick(1, T0 + 20 * MIN, True), 2)  # all idle: everything goes
    assert state.held == [] and release_watermark(state, 2) == (T0 + 20 * MIN, True)
    assert state.watermark == T0 + 20 * MIN
    assert decode_state(encode_state(state)) == state


def test_old_states_without_the_stage_two_fields_still_decode(tmp_path: Path) -> None:
    old = msgspec.msgpack.encode({"watermark": 5, "chains": {"c": [1, ["x"]]}})
    s = decode_state(old)
    assert s.watermark == 5 and s.origins == {} and s.held == []
