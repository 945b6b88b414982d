"""The rules reducer: detections, Sigma correlations, chain predicates, absence, silence, ids, state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.rules.engine import Engine, Item, State, decode_state, encode_state, fmt_us
from pipeline.rules.loader import load

MIN = 60 * 1_000_000
T0 = 1_764_000_000 * 1_000_000  # 2025-11-24


def env(eid: str, minute: float, typ: str = "x.y", *, source: str = "okta://acme", raw: Any = None,
        actor: str = "alice", assurance: str = "authenticated", action: str = "do", links: tuple[str, ...] = (),
        **target: str) -> dict:
    return {
        "id": eid, "time": fmt_us(T0 + int(minute * MIN)), "type": typ, "source": source, "action": action,
        "actor": {"id": actor, "assurance": assurance}, "target": {"id": "t", **target}, "links": list(links),
        "outcome": "success", "raw": raw if raw is not None else {},
    }


def engine(tmp: Path, text: str) -> Engine:
    (tmp / "r.yml").write_text(text)
    rs = load([tmp], builtin=False)
    assert not rs.problems, [str(p) for p in rs.problems]
    return Engine(rs)


def run(eng: Engine, items: list[Item], state: State | None = None, flush_to: float | None = None):
    state = state or State()
    alerts = []
    wm = 0
    for it in items:
        wm = max(wm, T0 + int((_minute(it)) * MIN))
        state, out = eng.step(state, it, wm)
        alerts.extend(out)
    if flush_to is not None:
        state, out = eng.advance(state, T0 + int(flush_to * MIN))
        alerts.extend(out)
    return state, alerts


def _minute(it: Item) -> float:
    from pipeline.rules.engine import time_us

    return (time_us(it.event["time"]) - T0) / MIN


FAILED = """\
title: failed login
id: 11111111-1111-4111-8111-111111111111
name: failed_login
logsource: {product: okta}
detection:
    selection: {eventType: user.session.start, outcome.result: FAILURE}
    condition: selection
"""


def failed(eid: str, minute: float, user: str = "bob", ip: str = "1.1.1.1") -> Item:
    raw = {"eventType": "user.session.start", "outcome": {"result": "FAILURE"},
           "actor": {"alternateId": user}, "client": {"ipAddress": ip}}
    return Item(event=env(eid, minute, "iam.login", raw=raw))


def test_detection_alert_has_deterministic_id_and_fields(tmp_path: Path) -> None:
    eng = engine(tmp_path, FAILED.replace("condition: selection", "condition: selection\nlevel: high\n"
                                          "tags: [attack.t1110]"))
    _, a1 = run(eng, [failed("e1", 0)])
    _, a2 = run(eng, [failed("e1", 0)])
    assert len(a1) == 1 and a1 == a2
    a = a1[0]
    assert (a.rule_id, a.level, a.kind, a.event_ids, a.tags) == (
        "11111111-1111-4111-8111-111111111111", "high", "detection", ("e1",), ("attack.t1110",))
    _, other = run(eng, [failed("e2", 0)])
    assert other[0].id != a.id


CORR = FAILED + """\
---
title: brute force
id: 22222222-2222-4222-8222-222222222222
correlation:
    type: event_count
    rules: [failed_login]
    group-by: [actor.alternateId]
    timespan: 10m
    condition: {gte: 3}
level: high
"""


def test_event_count_per_group_within_timespan(tmp_path: Path) -> None:
    eng = engine(tmp_path, CORR)
    items = [failed("a1", 0), failed("b1", 1, "carol"), failed("a2", 5), failed("b2", 12, "carol"),
             failed("a3", 9), failed("a4", 9.5), failed("b3", 30, "carol")]
    _, alerts = run(eng, items)
    assert [a.kind for a in alerts] == ["correlation"]  # the base rule does not alert by itself
    (a,) = alerts
    assert a.event_ids == ("a1", "a2", "a3") and a.group == {"actor.alternateId": "bob"}
    assert a.window_start == fmt_us(T0) and a.time == fmt_us(T0 + 9 * MIN)
    # a4 starts a new window; carol's failures were never 3 within 10 minutes
    _, again = run(eng, items)
    assert [x.id for x in again] == [a.id]


def test_generate_true_keeps_base_alerts(tmp_path: Path) -> None:
    eng = engine(tmp_path, CORR.replace("    condition: {gte: 3}", "    condition: {gte: 3}\n    generate: true"))
    _, alerts = run(eng, [failed("a1", 0), failed("a2", 1), failed("a3", 2)])
    assert [a.kind for a in alerts] == ["detection", "detection", "detection", "correlation"]


def test_value_count_counts_distinct_values(tmp_path: Path) -> None:
    eng = engine(tmp_path, FAILED + """\
---
title: spray
id: 33333333-3333-4333-8333-333333333333
correlation:
    type: value_count
    rules: [failed_login]
    group-by: [client.ipAddress]
    timespan: 1h
    condition: {field: actor.alternateId, gte: 3}
""")
    items = [failed("1", 0, "u1"), failed("2", 1, "u1"), failed("3", 2, "u2"), failed("4", 3, "u2", ip="9.9.9.9"),
             failed("5", 4, "u3")]
    _, alerts = run(eng, items)
    (a,) = alerts
    assert a.event_ids == ("1", "2", "3", "5") and a.group == {"client.ipAddress": "1.1.1.1"}


def test_closing_condition_fires_when_the_watermark_closes_the_window(tmp_path: Path) -> None:
    eng = engine(tmp_path, CORR.replace("condition: {gte: 3}", "condition: {gte: 2, lte: 3}"))
    items = [failed("a1", 0), failed("a2", 1), failed("c1", 0.5, "carol"), failed("c2", 2, "carol"),
             failed("c3", 3, "carol"), failed("c4", 4, "carol")]
    _, alerts = run(eng, items)
    assert alerts == []  # nothing is known before the windows close
    _, alerts = run(eng, items, flush_to=11)
    assert [(a.group["actor.alternateId"], len(a.event_ids)) for a in alerts] == [("bob", 2)]


TEMPORAL = """\
title: read secret
id: 44444444-4444-4444-8444-444444444444
name: secret
logsource: {product: causelog}
detection:
    selection: {type: secret.read}
    condition: selection
---
title: assume role
id: 55555555-5555-4555-8555-555555555555
name: assume
logsource: {product: causelog}
detection:
    selection: {type: iam.role.assumed}
    condition: selection
---
title: secret then role
id: 66666666-6666-4666-8666-666666666666
correlation:
    type: TYPE
    rules: [secret, assume]
    group-by: [person]
    timespan: 10m
"""


def test_temporal_ordered_needs_the_order_and_the_timespan(tmp_path: Path) -> None:
    eng = engine(tmp_path, TEMPORAL.replace("TYPE", "temporal_ordered"))
    ordered = [Item(event=env("s", 0, "secret.read"), person="erin"),
               Item(event=env("r", 4, "iam.role.assumed"), person="erin")]
    _, alerts = run(eng, ordered)
    assert [a.event_ids for a in alerts] == [("s", "r")] and alerts[0].person == "erin"
    reversed_ = [Item(event=env("r", 0, "iam.role.assumed"), person="erin"),
                 Item(event=env("s", 4, "secret.read"), person="erin")]
    assert run(eng, reversed_)[1] == []
    late = [Item(event=env("s", 0, "secret.read"), person="erin"),
            Item(event=env("r", 11, "iam.role.assumed"), person="erin")]
    assert run(eng, late)[1] == []
    two_people = [Item(event=env("s", 0, "secret.read"), person="erin"),
                  Item(event=env("r", 1, "iam.role.assumed"), person="frank")]
    assert run(eng, two_people)[1] == []
    eng2 = engine(tmp_path, TEMPORAL.replace("TYPE", "temporal"))
    assert len(run(eng2, reversed_)[1]) == 1


def test_group_by_person_falls_back_to_the_actor(tmp_path: Path) -> None:
    eng = engine(tmp_path, TEMPORAL.replace("TYPE", "temporal_ordered"))
    items = [Item(event=env("s", 0, "secret.read", actor="arn:x")),
             Item(event=env("r", 1, "iam.role.assumed", actor="arn:x"))]
    (a,) = run(eng, items)[1]
    assert a.group == {"person": "arn:x"}


CHAIN = """\
title: unreviewed deploy
id: 77777777-7777-4777-8777-777777777777
logsource: {product: causelog}
chain:
    missing: ['change.reviewed:approved']
detection:
    selection: {type: deploy.succeeded}
    condition: selection
"""


def test_chain_missing_uses_the_types_and_actions_seen_in_the_chain(tmp_path: Path) -> None:
    eng = engine(tmp_path, CHAIN)
    c = ("commit:9fceb02d0ae598e95dc970b74767f19372d61af8",)
    reviewed = [Item(event=env("c", 0, "git.push", links=c), chain_id="c"),
                Item(event=env("r", 1, "change.reviewed", action="approved", links=c), chain_id="c"),
                Item(event=env("d", 2, "deploy.succeeded", links=c), chain_id="c")]
    assert run(eng, reviewed)[1] == []
    commented = [Item(event=env("c", 0, "git.push", links=c), chain_id="c"),
                 Item(event=env("r", 1, "change.reviewed", action="commented", links=c), chain_id="c"),
                 Item(event=env("d", 2, "deploy.succeeded", links=c), chain_id="c")]
    state, alerts = run(eng, commented)
    (a,) = alerts
    assert a.chain_id == "c" and a.event_ids == ("d",)
    assert state.chains == {}  # nothing in that chain matched a chain pattern: nothing remembered
    # a review in another chain that merges into this one counts
    merged = [Item(event=env("r", 1, "change.reviewed", action="approved", links=c), chain_id="old"),
              Item(event=env("d", 2, "deploy.succeeded", links=c), chain_id="new", merged=("old",))]
    state, alerts = run(eng, merged)
    assert alerts == [] and list(state.chains) == ["new"]
    assert state.chains["new"][1] == ["change.reviewed:approved"]


def test_chain_contains(tmp_path: Path) -> None:
    eng = engine(tmp_path, CHAIN.replace("missing: ['change.reviewed:approved']", "contains: [iam.role.assumed]"))
    s = ("session:aws:ASIAEXAMPLE",)
    items = [Item(event=env("a", 0, "iam.role.assumed", links=s), chain_id="k"),
             Item(event=env("d", 1, "deploy.succeeded", links=s), chain_id="k"),
             Item(event=env("e", 1, "deploy.succeeded", links=("deploy:9",)), chain_id="other")]
    assert [a.event_ids for a in run(eng, items)[1]] == [("d",)]


ABSENCE = """\
title: schema change without deploy
id: absence-1
logsource: {product: causelog}
absence:
    after: {type: db.ddl}
    expect: {type: deploy.succeeded}
    join: JOIN
    within: 30m
level: high
"""


def test_absence_fires_on_the_watermark_not_before(tmp_path: Path) -> None:
    eng = engine(tmp_path, ABSENCE.replace("JOIN", "[target.service]"))
    ddl = Item(event=env("ddl", 0, "db.ddl", service="orders"))
    other = Item(event=env("x", 20, "something.else", service="other"))
    later = Item(event=env("y", 31, "something.else", service="other"))
    assert run(eng, [ddl, other])[1] == []
    (a,) = run(eng, [ddl, other, later])[1]
    assert a.kind == "absence" and a.event_ids == ("ddl",) and a.time == fmt_us(T0 + 30 * MIN)
    deploy = Item(event=env("dep", 25, "deploy.succeeded", service="orders"))
    assert run(eng, [ddl, other, deploy, later])[1] == []
    wrong_service = Item(event=env("dep", 25, "deploy.succeeded", service="billing"))
    assert len(run(eng, [ddl, wrong_service, later])[1]) == 1
    too_late = Item(event=env("dep", 40, "deploy.succeeded", service="orders"))
    assert len(run(eng, [ddl, too_late])[1]) == 1


def test_absence_joined_on_the_chain(tmp_path: Path) -> None:
    eng = engine(tmp_path, ABSENCE.replace("JOIN", "chain"))
    items = [Item(event=env("ddl", 0, "db.ddl"), chain_id="c1"),
             Item(event=env("dep", 5, "deploy.succeeded"), chain_id="c1"),
             Item(event=env("ddl2", 6, "db.ddl"), chain_id="c2"),
             Item(event=env("dep2", 7, "deploy.succeeded"), chain_id="c3"),
             Item(event=env("z", 60, "zzz.zzz"), chain_id="c9")]
    assert [a.event_ids for a in run(eng, items)[1]] == [("ddl2",)]


SILENCE = """\
title: quiet source
id: silence-1
silence: {source: 'okta://*', for: 15m, min_events: 5, baseline: 20m}
"""


def test_silence_fires_once_per_gap_for_a_usually_busy_source(tmp_path: Path) -> None:
    eng = engine(tmp_path, SILENCE)
    busy = [Item(event=env(f"o{i}", i * 5)) for i in range(6)]  # every 5 min for 25 min
    tick = [Item(event=env("k", 41, source="k8s-audit")), Item(event=env("k2", 60, source="k8s-audit"))]
    state, alerts = run(eng, busy + tick)
    (a,) = alerts
    assert a.kind == "silence" and a.group == {"source": "okta://acme"}
    assert a.window_start == fmt_us(T0 + 25 * MIN) and a.time == fmt_us(T0 + 40 * MIN)
    # it comes back, goes quiet again: a second alert with another id
    back = [Item(event=env("o9", 61)), Item(event=env("k3", 80, source="k8s-audit"))]
    state, more = run(eng, back, state)
    assert len(more) == 1 and more[0].id != a.id
    # a source that was never busy (one event an hour) never counts as silent
    sparse = [Item(event=env(f"s{i}", i * 60)) for i in range(6)] + [Item(event=env("k", 500, source="k8s-audit"))]
    assert run(eng, sparse)[1] == []


def test_state_round_trips_and_a_restart_mid_stream_changes_no_alert(tmp_path: Path) -> None:
    eng = engine(tmp_path, CORR + "---\n" + ABSENCE.replace("JOIN", "chain") + "---\n" + SILENCE)
    items = ([failed(f"f{i}", i) for i in range(7)]
             + [Item(event=env("ddl", 8, "db.ddl"), chain_id="c1")]
             + [Item(event=env(f"o{i}", 10 + i * 3), chain_id=f"z{i}") for i in range(10)]
             + [Item(event=env("k", 90, source="k8s-audit"))])
    _, straight = run(eng, items)
    assert {a.kind for a in straight} == {"correlation", "absence", "silence"}
    for cut in range(1, len(items)):
        state, first = run(eng, items[:cut])
        restored = decode_state(encode_state(state))
        _, second = run(eng, items[cut:], restored)
        assert first + second == straight, cut


def test_chains_record_splices_the_stored_envelope() -> None:
    import orjson

    from pipeline.rules.engine import chains_record, decode_item

    envelope = orjson.dumps(env("e1", 0, "deploy.succeeded"))
    item = decode_item(chains_record(envelope, "c1", "erin", ["c0"]))
    assert item == Item(event=orjson.loads(envelope), chain_id="c1", person="erin", merged=("c0",))
    assert decode_item(chains_record(envelope, None)).chain_id is None


def test_logsource_routes_rules_to_their_system_only(tmp_path: Path) -> None:
    eng = engine(tmp_path, """\
title: okta only
id: 88888888-8888-4888-8888-888888888888
logsource: {product: okta, service: okta}
detection:
    selection: {eventType: user.session.start}
    condition: selection
---
title: cloudtrail only
id: 99999999-9999-4999-8999-999999999999
logsource: {product: aws, service: cloudtrail}
detection:
    selection: {eventType: user.session.start}
    condition: selection
---
title: envelope of cloudtrail events
id: aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa
logsource: {product: causelog, service: cloudtrail, category: iam}
detection:
    selection: {action: AssumeRole}
    condition: selection
""")
    okta = Item(event=env("o", 0, "iam.login", raw={"eventType": "user.session.start"}))
    ct = Item(event=env("c", 0, "iam.role.assumed", source="cloudtrail://1/eu", action="AssumeRole",
                        raw={"eventType": "user.session.start"}))
    other = Item(event=env("k", 0, "k8s.pods.create", source="k8s-audit", action="AssumeRole"))
    assert [a.rule_id[:2] for a in run(eng, [okta])[1]] == ["88"]
    assert sorted(a.rule_id[:2] for a in run(eng, [ct])[1]) == ["99", "aa"]
    assert run(eng, [other])[1] == []


def test_value_sum_and_correlation_of_correlations(tmp_path: Path) -> None:
    eng = engine(tmp_path, """\
title: download
id: 11111111-1111-4111-8111-000000000001
name: download
logsource: {product: causelog}
detection:
    selection: {type: data.read}
    condition: selection
---
title: big download
id: 11111111-1111-4111-8111-000000000002
name: big_download
correlation:
    type: value_sum
    rules: [download]
    group-by: [actor.id]
    timespan: 1h
    condition: {field: raw.bytes, gt: 1000}
---
title: repeated big downloads
id: 11111111-1111-4111-8111-000000000003
correlation:
    type: event_count
    rules: [big_download]
    group-by: [actor.id]
    timespan: 1d
    condition: {gte: 2}
""")
    items = [Item(event=env(f"d{i}", i, "data.read", raw={"bytes": 400})) for i in range(7)]
    _, alerts = run(eng, items)
    assert [(a.rule_id[-1], len(a.event_ids)) for a in alerts] == [("2", 3), ("2", 3), ("3", 2)]


def test_extended_temporal_condition(tmp_path: Path) -> None:
    eng = engine(tmp_path, TEMPORAL.replace("TYPE", "temporal").replace(
        "    rules: [secret, assume]\n", "").replace("    timespan: 10m", "    timespan: 10m\n    condition: secret and not assume"))
    assert len(run(eng, [Item(event=env("s", 0, "secret.read"), person="p")])[1]) == 1
