"""The ``alerts`` table (migration 007): write alerts of the rules engine, list them.

Writes are idempotent: an alert id is deterministic and the table replaces rows by id; readers
take one row per id (``LIMIT 1 BY id``), so a replayed alert is never listed twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.rules.model import Alert
from pipeline.store.client import Store

COLUMNS = ("id", "rule_id", "title", "level", "kind", "time", "tags", "event_ids", "chain_id", "person",
           "group_json", "window_start", "window_end", "summary")


def _ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def alert_row(a: Alert) -> list[Any]:
    """One table row of an alert, in :data:`COLUMNS` order."""
    return [a.id, a.rule_id, a.title, a.level, a.kind, _ts(a.time), list(a.tags), list(a.event_ids),
            a.chain_id or "", a.person or "", orjson.dumps(a.group, option=orjson.OPT_SORT_KEYS).decode(),
            _ts(a.window_start), _ts(a.window_end), a.summary]


def insert_alerts(store: Store, alerts: Sequence[Alert]) -> None:
    """Store alerts (an alert already stored is replaced by the same row)."""
    if alerts:
        store.insert("alerts", [alert_row(a) for a in alerts], COLUMNS,
                     token="alerts:" + ",".join(sorted(a.id for a in alerts))[:4096])


def list_alerts(store: Store, *, since: datetime | None = None, rule: str | None = None, level: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """Alerts newest first, one per id; ``level`` means that level or above."""
    from pipeline.rules.model import LEVELS

    where = ["1"]
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        where.append("time >= {since:DateTime64(6, 'UTC')}")
        params["since"] = since
    if rule:
        where.append("rule_id = {rule:String}")
        params["rule"] = rule
    if level:
        where.append("level IN {levels:Array(String)}")
        params["levels"] = list(LEVELS[LEVELS.index(level):])
    sql = (f"SELECT {', '.join(COLUMNS)} FROM {store.database}.alerts WHERE {' AND '.join(where)} "
           f"ORDER BY time DESC, id, inserted_at DESC LIMIT 1 BY id LIMIT {{limit:UInt32}}")
    result = store.query(sql, params)
    return [_as_json(dict(zip(result.columns, row, strict=True))) for row in result.rows]


def _as_json(row: dict[str, Any]) -> dict[str, Any]:
    def iso(v: Any) -> str | None:
        if v is None:
            return None
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return str(v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    row["group"] = orjson.loads(row.pop("group_json") or "{}")
    for k in ("time", "window_start", "window_end"):
        row[k] = iso(row[k])
    row["chain_id"] = row["chain_id"] or None
    row["person"] = row["person"] or None
    return row


DELIVERY_COLUMNS = ("alert_id", "receiver", "status", "attempts", "error", "time")


def insert_deliveries(store: Store, deliveries: Sequence[Any]) -> None:
    """Record notification outcomes (``pipeline.stream.notifier.Delivery`` or dicts of its fields)."""
    rows = []
    for d in deliveries:
        f: dict[str, Any] = d if isinstance(d, dict) else {k: getattr(d, k) for k in DELIVERY_COLUMNS}
        rows.append([f["alert_id"], f["receiver"], f["status"], int(f["attempts"]), f.get("error") or "",
                     _ts(f["time"])])
    if rows:
        store.insert("alert_deliveries", rows, DELIVERY_COLUMNS)


def list_deliveries(store: Store, alert_id: str) -> list[dict[str, Any]]:
    """Every recorded delivery outcome of one alert, oldest first."""
    result = store.query(
        f"SELECT DISTINCT receiver, status, attempts, error, time FROM {store.database}.alert_deliveries "
        "WHERE alert_id = {a:String} ORDER BY time, receiver", {"a": alert_id})
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]
