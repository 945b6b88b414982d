"""Debezium change events -> change events (pure part of the data-change source).

``to_events(message_value, *, scope, topic, key=None)`` maps the value of one Debezium Kafka
record (already JSON-decoded) to zero or one envelope. Both converter settings are accepted:
with schemas (``{"schema": ..., "payload": {...}}``) and without (the payload itself). ``key``
is the record key, decoded the same way (``{"id": 1004}`` or ``{"schema":..., "payload": {...}}``).

Row changes
-----------
``op`` ``c``/``u``/``d``/``r``/``t`` -> type ``data.changed``, action ``insert``/``update``/
``delete``/``snapshot``/``truncate``. The diff says *that* and *where* data changed, not what
it was::

    {"table": "inventory.customers", "op": "u",
     "primary_key": {"id": "redacted:hmac-sha256:v1:..."},     # from the record key, else from
                                                                # ``primary_key=[...]`` column names
     "changed": ["first_name"],                                 # u: columns whose before != after
     "before": {"first_name": "redacted:hmac-sha256:v1:..."},   # u: changed columns only
     "after":  {"first_name": "redacted:hmac-sha256:v1:..."},   # c/r: the row; d: before = the row
     "values": "hash"}

``changed`` lists every column of the row for ``c`` and ``d``, none for ``r`` (a snapshot read
changes nothing) and ``t``. A column whose new value is Debezium's unavailable-value placeholder
(``__debezium_unavailable_value``: an unchanged TOASTed column) does not count as changed.
Comparison is type-strict (``1`` -> ``1.0`` is a change) and happens before any hashing.

``values`` is the value policy:

- ``"hash"`` (default): every value (and primary-key value) becomes
  ``redacted:hmac-sha256:v1:<32 hex>`` (:func:`pipeline.sources.redact.redact_value`): a change, and a
  change back, stay detectable; values are never stored. ``None`` (SQL NULL) stays ``None``.
- ``"redact"``: values pass through :func:`pipeline.sources.redact.redact` (columns named like
  secrets and credential-shaped strings are hashed, other values kept).
- ``"keep"``: values are stored as they are. Only for tables that hold neither personal data
  nor secrets; nothing is redacted.

Time: ``source.ts_ms`` (when the change was committed; ``0`` means unknown), else the payload's
``ts_ms``/``ts_us``/``ts_ns`` (when Debezium processed it).

Links and the database session
------------------------------
A Debezium event does not know the database session that made the change, so it carries no
``session:`` key. It carries the transaction instead: ``request:pgtx:<server>:<txId>`` for the
PostgreSQL connector (``source.txId``, else the first part of ``transaction.id``
``"<txId>:<lsn>"``), the same key :mod:`pipeline.sources.postgres_log` gives every statement
whose log line carries the transaction id (csvlog ``transaction_id``, jsonlog ``txid``, stderr
``%x``). The change therefore joins the chain of the session that wrote it -- provided
``server`` names the cluster the same way in both sources (it defaults to ``source.name``, the
connector's topic prefix; pass ``server=`` to match the log source). PostgreSQL xids are 32-bit
and wrap around; the correlator's key expiry keeps a reused xid from joining old chains. The
MySQL connector's GTID, when present, gives ``request:mysqltx:<server>:<gtid>``. A
``traceparent`` Kafka header (Debezium's OpenTelemetry integration) may be passed as
``traceparent=`` and gives ``trace:<id>``.

``source_seq`` is the position: the LSN for PostgreSQL (an integer), ``<binlog file>:<pos>:<row>``
for MySQL. ``raw`` holds the payload *without* ``before``/``after``: ``op``, times,
``transaction``, the schema's name, and ``source`` with its ``query`` (MySQL's
``binlog_rows_query_log_events`` text, which holds literal values) replaced by the normalised
statement and its keyed hash (:func:`pipeline.sources.pgsql.analyze`).

Id: ``event_id("debezium", server, table, position, op, <keyed digest of the primary key, else of
the row>)``: the same change delivered twice (with and without schema, or replayed) gets the same
id; snapshot rows, which share one LSN, differ by key.

Other messages
--------------
- Tombstones (``message_value`` is ``None``, or a ``payload`` of ``null``) follow every delete
  for log compaction and carry no information the delete did not: no event, counted as
  ``tombstone`` in ``stats``.
- Schema-change events (MySQL ``ddl``) -> ``db.ddl`` with the normalised DDL in ``raw``.
- Transaction metadata (``status`` ``BEGIN``/``END``), heartbeats and logical-decoding
  messages (``op`` ``m``): no event, counted as ``transaction_metadata``, ``heartbeat``,
  ``message``.

Actor: the change event does not name who made it. It is ``debezium:<server>`` (kind
``unknown``, assurance ``none``); the transaction link resolves the real actor (the database
role of the session). When ``source`` names a user (``user_name``, Oracle/Db2 connectors), the
actor is ``<connector>:<server>:<user>``, assurance ``claimed``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pipeline.model import Event, event_id
from pipeline.sources import pgsql
from pipeline.sources._normalize import build, canonical_digest, fail, parse_time, require_dict
from pipeline.sources.redact import redact, redact_value

__all__ = ["OPS", "UNAVAILABLE", "to_events"]

#: Debezium ``op`` -> envelope ``action``.
OPS = {"c": "insert", "u": "update", "d": "delete", "r": "snapshot", "t": "truncate"}
#: Debezium's placeholder for an unchanged TOASTed column.
UNAVAILABLE = "__debezium_unavailable_value"
_POLICIES = ("hash", "redact", "keep")


def _count(stats: Counter[str] | None, key: str) -> None:
    if stats is not None:
        stats[key] += 1


def _unwrap(message: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(payload, schema)`` of a converter envelope, or ``(message, None)`` without one."""
    if isinstance(message, dict) and "payload" in message and "schema" in message:
        schema = message.get("schema")
        return message.get("payload"), schema if isinstance(schema, dict) else None
    return message, None


def _apply_policy(row: dict[str, Any] | None, policy: str) -> dict[str, Any] | None:
    if row is None:
        return None
    if policy == "keep":
        return dict(row)
    if policy == "redact":
        return redact(dict(row))
    return {k: v if v is None or v == UNAVAILABLE else redact_value(v) for k, v in row.items()}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _time(payload: dict[str, Any], source: dict[str, Any]) -> datetime | None:
    for value in (source.get("ts_ms"), payload.get("ts_ms")):
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            parsed = parse_time(value if value >= 100_000_000_000 else value * 1000)
            if parsed is not None:
                return parsed
    for name, scale in (("ts_us", 1_000), ("ts_ns", 1_000_000)):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            parsed = parse_time(value // scale)
            if parsed is not None:
                return parsed
    return None


def _source_raw(source: dict[str, Any]) -> dict[str, Any]:
    out = dict(source)
    query = out.get("query")
    if isinstance(query, str) and query:
        st = pgsql.analyze(query, mysql=source.get("connector") == "mysql")
        out["query"] = {"normalized": st.normalized, "hash": st.hash, "command": st.command}
    return redact(out)


def _table_parts(source: dict[str, Any], topic: str) -> tuple[str | None, str]:
    """``(database, schema-qualified table)`` of a change event, from ``source`` or the topic."""
    db = source.get("db")
    db = str(db) if isinstance(db, str | int) and db != "" else None
    table = source.get("table")
    if isinstance(table, str) and table:
        schema = source.get("schema")
        return db, f"{schema}.{table}" if isinstance(schema, str) and schema else table
    rest = topic.split(".", 1)[1] if "." in topic else topic  # <prefix>.<db|schema>.<table>
    return db, rest


def _links(
    server: str, source: dict[str, Any], payload: dict[str, Any], traceparent: str | None
) -> list[str | None]:
    links: list[str | None] = []
    connector = str(source.get("connector") or "")
    tx = source.get("txId")
    if tx is None and connector == "postgresql":
        tid = (
            (payload.get("transaction") or {}).get("id")
            if isinstance(payload.get("transaction"), dict)
            else None
        )
        if isinstance(tid, str) and tid:
            tx = tid.split(":", 1)[0]
    if tx not in (None, "", 0, "0") and connector in ("postgresql", ""):
        links.append(f"request:pgtx:{server}:{tx}")
    gtid = source.get("gtid")
    if connector == "mysql" and isinstance(gtid, str) and gtid:
        links.append(f"request:mysqltx:{server}:{gtid}")
    if traceparent:
        parsed = pgsql.parse_traceparent(traceparent)
        if parsed:
            links.append(f"trace:{parsed[0]}")
    return links


def _position(source: dict[str, Any]) -> tuple[str, str | int | None]:
    lsn = source.get("lsn")
    if isinstance(lsn, int) and not isinstance(lsn, bool):
        return f"lsn:{lsn}", lsn
    if source.get("file") is not None and source.get("pos") is not None:
        seq = f"{source['file']}:{source['pos']}:{source.get('row', 0)}"
        return f"binlog:{seq}", seq
    for key in ("scn", "commit_lsn", "change_lsn", "sequence"):
        if source.get(key) not in (None, ""):
            return f"{key}:{source[key]}", str(source[key])
    return "", None


def _actor(server: str, source: dict[str, Any]) -> dict[str, Any]:
    user = source.get("user_name") or source.get("user")
    if isinstance(user, str) and user:
        connector = str(source.get("connector") or "db")
        return {
            "id": f"{connector}:{server}:{user}",
            "display": user,
            "kind": "unknown",
            "principal": user,
            "verified": False,
            "assurance": "claimed",
        }
    return {
        "id": f"debezium:{server}",
        "display": "change data capture (the change event does not name its author)",
        "kind": "unknown",
        "assurance": "none",
    }


def to_events(
    message_value: dict[str, Any] | None,
    *,
    scope: str,
    topic: str,
    key: Any = None,
    server: str | None = None,
    values: str = "hash",
    primary_key: Sequence[str] | None = None,
    traceparent: str | None = None,
    stats: Counter[str] | None = None,
) -> list[Event]:
    """The change event of one Debezium record value, or none (see the module docstring)."""
    if values not in _POLICIES:
        raise fail("invalid_value", f"values must be one of {', '.join(_POLICIES)}", "values", values)
    if not isinstance(topic, str) or not topic:
        raise fail("invalid_value", "the Kafka topic is required", "topic", topic)
    payload, schema = _unwrap(message_value)
    if payload is None:
        _count(stats, "tombstone")
        return []
    payload = require_dict(payload, "$.payload" if schema is not None else "$", "a Debezium change event")
    if "status" in payload and "op" not in payload:
        _count(stats, "transaction_metadata")
        return []
    source = payload.get("source")
    source = require_dict(source, "$.source") if source is not None else {}
    server = (
        server
        or (source.get("name") if isinstance(source.get("name"), str) else None)
        or topic.split(".", 1)[0]
    )
    if any(c.isspace() for c in server):
        raise fail("invalid_value", "server must not contain whitespace", "server", server)
    if "ddl" in payload and "op" not in payload:
        return _schema_change(payload, source, schema, scope=scope, topic=topic, server=server)
    op = payload.get("op")
    if op is None:
        _count(stats, "heartbeat")
        return []
    if op == "m":
        _count(stats, "message")
        return []
    if not isinstance(op, str) or op not in OPS:
        raise fail("invalid_value", f"unknown Debezium op; expected one of {', '.join(OPS)}", "$.op", op)

    before = payload.get("before")
    after = payload.get("after")
    before = require_dict(before, "$.before") if before is not None else None
    after = require_dict(after, "$.after") if after is not None else None
    if op in ("c", "r") and after is None:
        raise fail("missing_field", f"op `{op}` needs `after`", "$.after")
    if op == "u" and (before is None or after is None):
        # REPLICA IDENTITY DEFAULT: updates carry no before image
        before = before or {}
        if after is None:
            raise fail("missing_field", "op `u` needs `after`", "$.after")
    if op == "d" and before is None:
        raise fail("missing_field", "op `d` needs `before`", "$.before")

    # primary key: the record key, else the named columns of the row
    key_payload, _ = _unwrap(key)
    pk: dict[str, Any] | None = None
    if isinstance(key_payload, dict) and key_payload:
        pk = dict(key_payload)
    elif primary_key:
        row = after or before or {}
        pk = {name: row.get(name) for name in primary_key}

    if op == "u":
        assert before is not None and after is not None
        columns = list(dict.fromkeys([*before, *after]))
        changed = [
            c
            for c in columns
            if after.get(c) != UNAVAILABLE and not (c in before and c in after and _same(before[c], after[c]))
        ]
        diff_before = _apply_policy({c: before[c] for c in changed if c in before}, values)
        diff_after = _apply_policy({c: after[c] for c in changed if c in after}, values)
    elif op in ("c", "r"):
        assert after is not None
        changed = list(after) if op == "c" else []
        diff_before, diff_after = None, _apply_policy(after, values)
    elif op == "d":
        assert before is not None
        changed = list(before)
        diff_before, diff_after = _apply_policy(before, values), None
    else:  # truncate
        changed, diff_before, diff_after = [], None, None

    db, qualified = _table_parts(source, topic)
    table = f"{db}.{qualified}" if db else qualified
    diff: dict[str, Any] = {
        "table": table,
        "op": op,
        "primary_key": _apply_policy(pk, values) if pk is not None else None,
        "changed": changed,
        "before": diff_before,
        "after": diff_after,
        "values": values,
    }

    found = _time(payload, source)
    if found is None:
        raise fail("missing_field", "no usable source.ts_ms, ts_ms, ts_us or ts_ns", "$.ts_ms")
    pos_key, seq = _position(source)
    identity_row = pk if pk is not None else (after if after is not None else before)
    ident = event_id(
        "debezium", server, table, pos_key or f"ts:{found.isoformat()}", op, canonical_digest(identity_row)
    )

    raw: dict[str, Any] = {k: v for k, v in payload.items() if k not in ("before", "after", "source")}
    raw["source"] = _source_raw(source)
    raw["topic"] = topic
    if schema is not None and isinstance(schema.get("name"), str):
        raw["schema_name"] = schema["name"]
    if pk is not None:
        raw["key_fields"] = sorted(pk)
    name = str(source.get("table") or qualified)
    envelope: dict[str, Any] = {
        "id": ident,
        "source": f"debezium://{server}",
        "type": "data.changed",
        "time": found,
        "scope": scope,
        "actor": _actor(server, source),
        "target": {
            "kind": "db.table",
            "id": f"{server}/{db}/{qualified}" if db else f"{server}/{qualified}",
            "name": name,
            "service": server,
        },
        "action": OPS[op],
        "outcome": "success",
        "links": _links(server, source, payload, traceparent),
        "diff": diff,
        "raw": redact(raw),
    }
    if seq is not None:
        envelope["source_seq"] = seq
    if source.get("snapshot") not in (None, False, "false"):
        envelope["subject"] = "snapshot"
    return [build(envelope)]


def _schema_change(
    payload: dict[str, Any],
    source: dict[str, Any],
    schema: dict[str, Any] | None,
    *,
    scope: str,
    topic: str,
    server: str,
) -> list[Event]:
    ddl = payload.get("ddl")
    if not isinstance(ddl, str):
        raise fail("wrong_type", "expected the DDL statement as a string", "$.ddl", ddl)
    st = pgsql.analyze(ddl, mysql=source.get("connector") == "mysql")
    found = _time(payload, source)
    if found is None:
        raise fail("missing_field", "no usable source.ts_ms or ts_ms", "$.ts_ms")
    database = payload.get("databaseName") or source.get("db")
    changes = payload.get("tableChanges")
    table = None
    if isinstance(changes, list) and changes and isinstance(changes[0], dict):
        table = changes[0].get("id")
    pos_key, seq = _position(source)
    raw: dict[str, Any] = {k: v for k, v in payload.items() if k not in ("ddl", "source", "tableChanges")}
    raw["ddl"] = {"normalized": st.normalized, "hash": st.hash, "command": st.command}
    raw["source"] = _source_raw(source)
    raw["topic"] = topic
    if isinstance(changes, list):
        raw["table_changes"] = [{k: c.get(k) for k in ("type", "id")} for c in changes if isinstance(c, dict)]
    target_name = str(table or database or server)
    envelope: dict[str, Any] = {
        "id": event_id("debezium", server, "ddl", pos_key or canonical_digest(payload), st.hash),
        "source": f"debezium://{server}",
        "type": "db.ddl",
        "time": found,
        "scope": scope,
        "actor": _actor(server, source),
        "target": {
            "kind": "db.table" if table else "db.database",
            "id": f"{server}/{target_name}",
            "name": target_name,
            "service": server,
        },
        "action": st.command.lower() or "ddl",
        "outcome": "success",
        "links": _links(server, source, payload, None),
        "raw": redact(raw),
    }
    if seq is not None:
        envelope["source_seq"] = seq
    return [build(envelope)]
