"""Source files -> envelopes, offline (no broker, no store), for ``causelog rules test``.

Reuses the sources' own readers and normalizers (``pipeline.sources``): CloudTrail deliveries and
JSON lines, Okta System Log and GitHub audit-log exports, Kubernetes audit logs, GitHub webhook
payload files (the folder name is the event name, as ``ingest github-webhook --file``), Terraform
plans, Debezium change events and PostgreSQL logs. The kind of each file is detected from its
content unless given. Records a normalizer rejects are returned as problems, never dropped
silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import CauselogError, SourceError
from pipeline.model import Event

KINDS = ("cloudtrail", "okta", "github-audit", "k8s-audit", "github-webhook", "terraform", "debezium",
         "postgres-log")
_SUFFIXES = (".json", ".jsonl", ".log", ".gz", ".ndjson", ".out", ".csv")


@dataclass(frozen=True)
class Rejected:
    """A record the source's normalizer refused (origin and the reason)."""

    origin: str
    reason: str


def detect_kind(obj: Any) -> str | None:
    """The source kind of one parsed JSON document, from the fields each system always writes."""
    if isinstance(obj, list):
        return next((k for k in map(detect_kind, obj[:5]) if k), None)
    if not isinstance(obj, dict):
        return None
    if "logName" in obj and ("textPayload" in obj or "jsonPayload" in obj):
        return "postgres-log"  # Cloud SQL for PostgreSQL (Cloud Logging export)
    if "Records" in obj or ("eventSource" in obj and "eventName" in obj):
        return "cloudtrail"
    if obj.get("kind") in ("Event", "EventList") or ("auditID" in obj and "verb" in obj):
        return "k8s-audit"
    if "eventType" in obj and "published" in obj:
        return "okta"
    if "format_version" in obj and ("resource_changes" in obj or "planned_values" in obj or "terraform_version" in obj):
        return "terraform"
    if "payload" in obj and isinstance(obj["payload"], dict) and "op" in obj["payload"] or "op" in obj and "source" in obj:
        return "debezium"
    if "action" in obj and "actor" in obj and ("created_at" in obj or "@timestamp" in obj):
        return "github-audit"
    if "sender" in obj or "repository" in obj or "hook" in obj or "installation" in obj:
        return "github-webhook"
    return None


def _files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(_SUFFIXES)))
        elif p.exists():
            out.append(p)
        else:
            raise SourceError(f"{p}: no such file or directory")
    return out


def _documents(path: Path) -> list[Any] | None:
    """One JSON document, or JSON lines; ``None`` when the file is neither (a server log)."""
    from pipeline.sources.files import read_bytes

    data = read_bytes(path)
    try:
        return [orjson.loads(data)]
    except orjson.JSONDecodeError:
        pass
    docs = []
    for line in data.splitlines():
        if line.strip():
            try:
                docs.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                return None
    return docs


def read_events(paths: Sequence[Path], *, kind: str | None = None, scope: str = "default",
                server: str = "offline") -> tuple[list[Event], list[Rejected]]:
    """Every envelope the sources make of ``paths``, in file order, and the rejected records."""
    events: list[Event] = []
    rejected: list[Rejected] = []
    for f in _files(paths):
        for _origin, result in _file_events(f, kind, scope, server):
            if isinstance(result, Rejected):
                rejected.append(result)
            else:
                events.extend(result)
    return events, rejected


def _file_events(f: Path, kind: str | None, scope: str, server: str) -> Iterator[tuple[str, list[Event] | Rejected]]:
    if kind == "postgres-log":
        yield from _postgres(f, scope, server)
        return
    if f.name.endswith(".csv") and kind in (None, "cloudtrail") and _is_cloudtrail_csv(f):
        yield from _cloudtrail_csv(f, scope)
        return
    docs = _documents(f)
    if docs is None:
        if kind is None:
            yield from _postgres(f, scope, server)
        else:
            yield str(f), Rejected(str(f), f"not JSON or JSON lines, so not {kind}")
        return
    # One kind per file: the first document that says what it is decides.
    kind = kind or next((k for k in map(detect_kind, docs) if k), None)
    if kind == "postgres-log" or (kind is None and not f.name.endswith((".json", ".json.gz"))):
        # A server log in JSON lines (jsonlog, CloudNativePG, Cloud SQL): the log reader knows them.
        yield from _postgres(f, scope, server)
        return
    for n, doc in enumerate(docs, 1):
        origin = f"{f}:{n}" if len(docs) > 1 else str(f)
        k = kind
        if k is None:
            yield origin, Rejected(origin, "unknown format (give --source KIND)")
            continue
        try:
            yield origin, _convert(k, doc, f, scope, server)
        except CauselogError as exc:
            yield origin, Rejected(origin, str(exc))


def _is_cloudtrail_csv(f: Path) -> bool:
    from pipeline.sources import cloudtrail

    with f.open("rb") as fh:
        return cloudtrail.is_csv_export(fh.readline())


def _cloudtrail_csv(f: Path, scope: str) -> Iterator[tuple[str, list[Event] | Rejected]]:
    """OTRF's CSV export of CloudTrail calls, row by row (``cloudtrail.csv_rows``, the reader
    ``ingest cloudtrail`` uses)."""
    from pipeline.sources import cloudtrail

    rows = cloudtrail.csv_rows(f.read_text(encoding="utf-8", errors="replace"))
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except CauselogError as exc:  # unreadable CSV: the rest of the file is one rejection
            yield str(f), Rejected(str(f), str(exc))
            return
        origin = f"{f}:{row.line}"
        try:
            yield origin, cloudtrail.to_events(row.record, scope=scope)
        except CauselogError as exc:
            yield origin, Rejected(origin, str(exc))


def _convert(kind: str, doc: Any, f: Path, scope: str, server: str) -> list[Event]:
    from pipeline.sources import cloudtrail, debezium, github, github_audit, k8s_audit, okta, terraform

    mtime = datetime.fromtimestamp(f.stat().st_mtime, UTC)
    if kind == "cloudtrail":
        return [e for r in cloudtrail.iter_records(doc) for e in cloudtrail.to_events(r, scope=scope)]
    if kind == "okta":
        return okta.to_events(doc, scope=scope)
    if kind == "github-audit":
        return github_audit.to_events(doc, scope=scope)
    if kind == "k8s-audit":
        return [e for r in k8s_audit.split_records(doc) for e in k8s_audit.to_events(r, scope=scope)]
    if kind == "github-webhook":
        return github.to_events(doc, event_name=f.parent.name, scope=scope, received_at=mtime)
    if kind == "terraform":
        name = f.parent.name if f.stem == "plan" else f.stem
        return terraform.to_events(doc, scope=scope, plan_name=name, planned_at=mtime)
    if kind == "debezium":
        return debezium.to_events(doc, scope=scope, topic=f.stem, server=server)
    raise SourceError(f"unknown source kind {kind!r} (one of {', '.join(KINDS)})")


def _postgres(f: Path, scope: str, server: str) -> Iterator[tuple[str, list[Event] | Rejected]]:
    from pipeline.sources import postgres_log as pg

    # The reader `ingest postgres-log` uses: the same format detection (pgaudit transcripts too).
    produced = False
    try:
        for record, after in pg.fetch_log(f, None, final=True):
            origin = f"{after.get('path', f)}:{record.line}"
            produced = True
            try:
                yield origin, pg.to_events(record, scope=scope, server=server)
            except CauselogError as exc:
                yield origin, Rejected(origin, str(exc))
    except CauselogError as exc:
        yield str(f), Rejected(str(f), str(exc))
        return
    if not produced:  # nothing recognisable: say so rather than report zero events in silence
        yield str(f), Rejected(str(f), "no record recognised (not a known source format; give --source KIND)")


def evaluate(engine: Any, events: Sequence[Event], *, flush: bool = False,
             chains: dict[str, str] | None = None) -> list[Any]:
    """Run ``engine`` over ``events`` in event-time order, as the rules app would: chain ids from
    the offline correlation (:func:`pipeline.correlate.offline.components`) unless given, the
    watermark the latest event time seen. ``flush`` then moves the watermark past every deadline
    (absences whose time ran out after the data ends, windows still open)."""
    import msgspec

    from pipeline.correlate.offline import components
    from pipeline.rules.engine import Item

    ordered = sorted(events, key=lambda e: (e.time, e.id))
    chain_of = chains if chains is not None else components(ordered)
    return evaluate_items(engine, [Item(event=msgspec.to_builtins(e), chain_id=chain_of.get(e.id)) for e in ordered],
                          flush=flush)


def evaluate_items(engine: Any, items: Sequence[Any], *, flush: bool = False) -> list[Any]:
    """Run ``engine`` over chains items (:class:`pipeline.rules.engine.Item`) in event-time order
    with one state, the watermark the latest event time seen; an event id seen twice counts once."""
    from pipeline.rules.engine import State, time_us

    timed = sorted(((time_us(i.event["time"]), str(i.event.get("id", "")), i) for i in items), key=lambda x: x[:2])
    state = State()
    alerts: list[Any] = []
    watermark = 0
    seen: set[str] = set()
    for t, eid, item in timed:
        if eid in seen:  # the worker stores an event once; so does this
            continue
        seen.add(eid)
        watermark = max(watermark, t)
        state, out = engine.step(state, item, watermark)
        alerts.extend(out)
    if flush:
        state, out = engine.advance(state, 2**61)
        alerts.extend(out)
    return alerts


HUNT_SQL = (
    "SELECT envelope, chain_id FROM {database}.events "
    "WHERE time >= parseDateTime64BestEffort({{since:String}}, 6, 'UTC') "
    "AND time <= parseDateTime64BestEffort({{until:String}}, 6, 'UTC') "
    "ORDER BY time, id LIMIT 1 BY id LIMIT {{limit:UInt32}}"
)


def hunt_items(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Chains items from ``(envelope, chain_id)`` rows of the events table."""
    from pipeline.rules.engine import Item

    items = []
    for envelope, chain_id in rows:
        data = envelope.encode() if isinstance(envelope, str) else envelope
        items.append(Item(event=orjson.loads(data), chain_id=chain_id or None))
    return items
