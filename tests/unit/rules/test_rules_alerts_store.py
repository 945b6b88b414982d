"""The alerts table (migration 007): idempotent writes, filters, one row per id."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.rules.model import Alert
from pipeline.store import Store
from pipeline.store.alerts import insert_alerts, list_alerts
from pipeline.stream.alerts_api import alert_filters


def _alert(i: int, level: str = "high", rule: str = "r1", minute: int = 0) -> Alert:
    return Alert(id=f"a{i}", rule_id=rule, title="t", level=level, kind="correlation",
                 time=f"2026-11-27T02:{minute:02d}:00.000000Z", tags=("attack.t1098",), event_ids=("e1", "e2"),
                 chain_id="c1", person="erin", group={"user": "bob"}, window_start="2026-11-27T01:55:00.000000Z",
                 window_end=f"2026-11-27T02:{minute:02d}:00.000000Z", summary=f"alert {i}")


def test_alerts_round_trip_and_replays_do_not_duplicate(store: Store) -> None:
    insert_alerts(store, [_alert(1, minute=1), _alert(2, "low", "r2", minute=2)])
    insert_alerts(store, [_alert(1, minute=1)])  # a replay
    insert_alerts(store, [_alert(1, minute=1), _alert(3, "critical", minute=3)])  # a replay in another batch
    rows = list_alerts(store)
    assert [r["id"] for r in rows] == ["a3", "a2", "a1"]
    a1 = rows[-1]
    assert a1 == {
        "id": "a1", "rule_id": "r1", "title": "t", "level": "high", "kind": "correlation",
        "time": "2026-11-27T02:01:00.000000Z", "tags": ["attack.t1098"], "event_ids": ["e1", "e2"],
        "chain_id": "c1", "person": "erin", "group": {"user": "bob"},
        "window_start": "2026-11-27T01:55:00.000000Z", "window_end": "2026-11-27T02:01:00.000000Z",
        "summary": "alert 1",
    }
    assert [r["id"] for r in list_alerts(store, level="high")] == ["a3", "a1"]
    assert [r["id"] for r in list_alerts(store, rule="r2")] == ["a2"]
    since = datetime(2026, 11, 27, 2, 2, tzinfo=UTC)
    assert [r["id"] for r in list_alerts(store, since=since)] == ["a3", "a2"]
    assert len(list_alerts(store, limit=1)) == 1


def test_api_filters_are_checked() -> None:
    f = alert_filters({"since": "2026-11-27T02:00:00Z", "level": "medium", "limit": "5"})
    assert f["since"] == datetime(2026, 11, 27, 2, tzinfo=UTC) and f["level"] == "medium" and f["limit"] == 5
    for bad in ({"level": "urgent"}, {"limit": "0"}, {"since": "yesterday-ish"}):
        try:
            alert_filters(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_delivery_outcomes_are_recorded_per_alert(store: Store) -> None:
    from pipeline.store.alerts import insert_deliveries, list_deliveries
    from pipeline.stream.notifier import Delivery

    insert_deliveries(store, [
        Delivery(alert_id="a1", receiver="pd", status="failed", attempts=5, error="refused",
                 time="2026-11-27T02:15:00.000000Z"),
        {"alert_id": "a1", "receiver": "hook", "status": "delivered", "attempts": 1, "error": "",
         "time": "2026-11-27T02:14:30.000000Z"},
        Delivery(alert_id="a2", receiver="hook", status="delivered", attempts=2, time="2026-11-27T02:16:00.000000Z"),
    ])
    rows = list_deliveries(store, "a1")
    assert [(r["receiver"], r["status"], r["attempts"], r["error"]) for r in rows] == [
        ("hook", "delivered", 1, ""), ("pd", "failed", 5, "refused")]


def test_hunt_reads_stored_history_with_its_chains(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import orjson
    from factories import event_dict

    from pipeline.model import decode
    from pipeline.rules.engine import Engine
    from pipeline.rules.loader import load
    from pipeline.rules.offline import HUNT_SQL, evaluate_items, hunt_items
    from pipeline.store import EventWriter, Pending, Position

    rows = []
    for i in range(30):
        d = event_dict(i)
        if i % 10 == 3:
            d["actor"]["assurance"] = "mfa"
        raw = orjson.dumps(d)
        rows.append(Pending(decode(raw), raw, Position("causelog.changes", 0, i)))
    EventWriter(store).write(rows)
    (tmp_path / "r.yml").write_text("""\
title: prod config change by a claimed actor
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c41
logsource: {product: causelog}
detection:
    selection: {type: config.changed, target.environment: prod, actor.assurance: {lt: authenticated}}
    condition: selection
""")
    engine = Engine(load([tmp_path], builtin=False))
    sql = HUNT_SQL.format(database=store.database)
    got = store.readonly(sql, {"since": "2026-11-27T00:00:00.010000+00:00", "until": "2026-11-28T00:00:00+00:00",
                               "limit": 1000}).rows
    items = hunt_items(got)
    assert [i.event["id"] for i in items] == [event_dict(i)["id"] for i in range(10, 30)]
    alerts = evaluate_items(engine, items)
    assert [a.event_ids[0] for a in alerts] == [event_dict(i)["id"] for i in range(10, 30) if i % 10 != 3]
