"""The public connector API: wire any change tool into causelog with two functions.

This module is causelog's **stable API for connectors** (semantic versioning: names in
``__all__`` keep their meaning and signatures within a major version; everything else in
``pipeline`` is internal). A connector is any object with

- ``name`` (``str``): short kind, e.g. ``"argocd"``; it prefixes DLQ origins;
- ``instance`` (``str``): what this one reads (a server URL, a path); ``name:instance`` keys
  its cursor, so two connectors of one kind reading different things keep separate cursors;
- ``fetch(cursor) -> Iterable[Record]`` (I/O): the records after ``cursor`` (``None`` on the
  first run), each carrying the cursor to resume *after* it (any JSON-able value);
- ``to_events(record) -> Iterable[Event]`` (pure): the envelopes of one record. Raise
  :class:`DecodeError` (or :func:`reject`) for a record that does not convert; it goes to the
  DLQ with its origin and the reason, and the run goes on.

:func:`run_connector` runs it: events of a chunk of records and the cursor after that chunk are
committed in **one Kafka transaction** (nothing missing, nothing twice after a crash or
``kill -9``), bad records go to ``<prefix>.dlq`` with ``origin``/``reason`` headers, ``once``
(backfill, then return) or ``follow`` (poll every ``interval`` seconds until SIGTERM/Ctrl-C),
with a progress line on a terminal and nothing on a pipe. ``causelog ingest plugin
MODULE:NAME`` (or an entry point of group ``causelog.connectors``) does the same from the CLI.

Helpers for what connectors get wrong: :func:`event_id` (deterministic ids from the source's
own identity), :func:`actor` (with assurance), link builders (:func:`commit_link`,
:func:`deploy_link`, :func:`change_link`, :func:`session_link`, :func:`trace_link`,
:func:`request_link`), :func:`diff` (structured before/after with secrets hashed),
:func:`redact`, :func:`parse_time` (UTC, microseconds) and :func:`envelope` (validates the
event, naming the bad field). A minimal connector::

    from pipeline import connect as c

    class Deploys:
        name, instance = "deploybot", "https://deploybot.internal"

        def fetch(self, cursor):
            for item in read_api(after=cursor):
                yield c.record(item, cursor=item["seq"], origin=f"deploy:{item['id']}")

        def to_events(self, rec):
            d = rec.payload
            return [c.envelope(source="deploybot", identity=[d["id"]], type="deploy.succeeded",
                               time=d["finished_at"], actor=c.actor(d["user"]),
                               target=c.target("service", d["service"]), action="deploy",
                               outcome="success", links=[c.deploy_link(d["id"]), c.commit_link(d["sha"])])]

Importing this module loads no Kafka client; :func:`run_connector` does, when called.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec
import orjson

from pipeline.errors import CauselogError, ConfigError, DecodeError, SourceError
from pipeline.model import Actor, Event, Target, event_id, to_micros
from pipeline.model.event import ActorKind, Assurance, Outcome
from pipeline.sources import _normalize
from pipeline.sources.diff import structured_diff
from pipeline.sources.redact import redact
from pipeline.sources.runner import RawRecord, Report, Sink, run_source

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = [
    "API_VERSION",
    "Actor",
    "Assurance",
    "Connector",
    "DecodeError",
    "Event",
    "MemorySink",
    "Outcome",
    "Record",
    "Report",
    "SourceError",
    "Target",
    "actor",
    "as_connector",
    "change_link",
    "commit_link",
    "deploy_link",
    "diff",
    "envelope",
    "event_id",
    "parse_time",
    "record",
    "redact",
    "reject",
    "request_link",
    "run_connector",
    "session_link",
    "target",
    "to_micros",
    "trace_link",
    "traceparent_link",
]

log = logging.getLogger("causelog.connect")

API_VERSION = "1.0"
"""Version of this API: the major part changes only with an incompatible change."""

Record = RawRecord
"""One record as ``fetch`` read it: ``payload`` (anything), ``cursor`` (JSON-able, where to resume
*after* it), ``origin`` (names it in the DLQ and logs), ``original`` (its verbatim bytes, what the
DLQ keeps). Build one with :func:`record`."""

_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


@runtime_checkable
class Connector(Protocol):
    """What :func:`run_connector` runs (see the module docstring)."""

    name: str
    instance: str

    def fetch(self, cursor: Any) -> Iterable[RawRecord]:
        """Records after ``cursor`` (None on a first run); each says where to resume after it."""
        ...

    def to_events(self, record: RawRecord) -> Iterable[Event]:
        """Envelopes of one record (pure); raise DecodeError for a record that does not convert."""
        ...


# -- records and errors ---------------------------------------------------------------------


def record(payload: Any, *, cursor: Any, origin: str, original: bytes | None = None) -> RawRecord:
    """A :data:`Record`; ``original`` defaults to the JSON of ``payload`` (what the DLQ keeps)."""
    if original is None:
        original = payload if isinstance(payload, bytes) else orjson.dumps(payload, default=str)
    return RawRecord(payload=payload, cursor=cursor, origin=origin, original=original)


def reject(reason: str, detail: str, *, field: str | None = None, value: Any = None) -> DecodeError:
    """The error to raise for a record that does not convert (``raise reject("missing_field", ...)``).

    ``reason`` is a short stable code (``missing_field``, ``wrong_type``, ``invalid_value``...)
    stored in the DLQ record's ``reason`` header.
    """
    return DecodeError(reason, detail, field=field, value=value)


# -- fields ---------------------------------------------------------------------------------


def parse_time(value: Any, *, field: str = "$.time") -> datetime:
    """An aware UTC datetime (microseconds) from RFC 3339, epoch seconds/milliseconds or a datetime.

    Naive strings are UTC; nanoseconds are cut to microseconds. Anything else, or a time outside
    1970..2200, raises DecodeError naming ``field``.
    """
    parsed = _normalize.parse_time(value)
    if parsed is None or not 1970 <= parsed.year < 2200:
        raise DecodeError("invalid_value", "not a time (RFC 3339 or epoch seconds/milliseconds, 1970..2200)",
                          field=field, value=value)
    return parsed


def actor(
    id: str | None,
    *,
    kind: ActorKind = "human",
    assurance: Assurance = "claimed",
    display: str = "",
    principal: str | None = None,
) -> Actor:
    """Who did it. ``assurance`` is what the *source* proved: ``claimed`` (it says so),
    ``authenticated`` (it logged them in), ``mfa``, ``signed``. An empty ``id`` gives the unknown
    actor (kind ``unknown``, assurance ``none``). ``principal`` (raw per-system identity) defaults
    to ``id``; ``verified`` is true from ``authenticated`` up."""
    if not id:
        return Actor(id="unknown", kind="unknown", assurance="none")
    return Actor(id=id, kind=kind, assurance=assurance, display=display,
                 principal=id if principal is None else principal,
                 verified=assurance in ("authenticated", "mfa", "signed"))


def target(kind: str, id: str, *, name: str = "", environment: str = "", service: str = "") -> Target:
    """What was changed or accessed (``service``/``id`` are what ``causelog why`` matches)."""
    return Target(kind=kind, id=id, name=name, environment=environment, service=service)


def _key(kind: str, *parts: Any) -> str | None:
    if any(p is None or str(p).strip() == "" for p in parts):
        return None
    value = ":".join(str(p).strip() for p in parts)
    return None if any(c.isspace() for c in value) else f"{kind}:{value}"


def commit_link(sha: str | None) -> str | None:
    """``commit:<sha>`` (lower-case hex, 7..64 digits) or None when ``sha`` is not a commit id."""
    return f"commit:{sha.lower()}" if isinstance(sha, str) and _SHA.fullmatch(sha) else None


def deploy_link(*id_parts: Any) -> str | None:
    """``deploy:<id>``; several parts join with ``:`` (``deploy_link("argocd", app, n)``)."""
    return _key("deploy", *id_parts)


def change_link(repo: str | None, number: Any) -> str | None:
    """``change:<repo>#<number>``: a pull/merge request (``acme/api``, 42)."""
    return None if not repo or number in (None, "") else f"change:{repo}#{number}"


def session_link(system: str, *id_parts: Any) -> str | None:
    """``session:<system>:<id>``: everything done within one login/session/plan."""
    return _key("session", system, *id_parts)


def trace_link(trace_id: str | None) -> str | None:
    """``trace:<32 hex>`` of a W3C trace id (None unless it is one)."""
    if isinstance(trace_id, str) and re.fullmatch(r"[0-9a-fA-F]{32}", trace_id) and set(trace_id) != {"0"}:
        return f"trace:{trace_id.lower()}"
    return None


def traceparent_link(traceparent: str | None) -> str | None:
    """``trace:<trace id>`` of a W3C ``traceparent`` header (``00-<trace>-<span>-<flags>``)."""
    m = _TRACEPARENT.fullmatch(traceparent.strip().lower()) if isinstance(traceparent, str) else None
    return trace_link(m.group(1)) if m else None


def request_link(*id_parts: Any) -> str | None:
    """``request:<id>``: one request/transaction/correlation id shared by several events."""
    return _key("request", *id_parts)


def diff(before: Any, after: Any, *, before_known: bool = True, max_paths: int = 1000) -> dict[str, Any]:
    """Structured diff of two JSON-like values: changed leaf paths with their values, secrets
    replaced by ``redacted:hmac-sha256:v1:<32 hex>`` (keyed, see README "Keyed hashes") (see :mod:`pipeline.sources.diff`)."""
    return structured_diff(before, after, before_known=before_known, max_paths=max_paths)


def envelope(
    *,
    source: str,
    type: str,
    time: Any,
    actor: Actor,
    target: Target,
    action: str,
    outcome: Outcome = "unknown",
    identity: Sequence[str | int] | None = None,
    id: str | None = None,
    scope: str = "default",
    links: Iterable[str | None] = (),
    diff: dict[str, Any] | None = None,
    raw: Any = None,
    subject: str | None = None,
    source_seq: str | int | None = None,
) -> Event:
    """A validated :class:`Event`; a bad field raises DecodeError naming it.

    The id is ``event_id(source, *identity)``: pass the record's *own* identity (delivery id,
    history id, sequence number) so a replay gives the same id; or pass ``id`` ready-made.
    ``time`` goes through :func:`parse_time`. ``None`` links are dropped, duplicates kept once.
    ``raw`` is stored as given: redact it (:func:`redact`) if it may hold secrets.
    ``scope`` is usually left alone: ``run_connector(scope=...)`` sets the operator's.
    """
    if id is None:
        if not identity:
            raise ValueError("envelope() needs identity=[...] (the record's own identity) or id=")
        id = event_id(source, *identity)
    fields: dict[str, Any] = {
        "id": id, "source": source, "type": type, "time": parse_time(time), "scope": scope,
        "actor": msgspec.to_builtins(actor), "target": msgspec.to_builtins(target), "action": action,
        "outcome": outcome, "links": [link for link in links if link],
    }
    for name, value in (("diff", diff), ("raw", raw), ("subject", subject), ("source_seq", source_seq)):
        if value is not None:
            fields[name] = value
    return _normalize.build(fields)


class MemorySink:
    """A sink for connector tests: what a run made visible, commit by commit (no Kafka).

    ``events`` are the committed envelopes (decoded), ``dlq`` the committed rejected records as
    ``(original bytes, headers dict)``, ``cursors`` every committed cursor; pass it as
    ``run_connector(connector, sink=MemorySink())``. Records sent after the last commit are in
    ``pending`` (what Kafka would have aborted).
    """

    def __init__(self) -> None:
        self.pending: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.events: list[Event] = []
        self.dlq: list[tuple[bytes, dict[str, str]]] = []
        self.cursors: list[Any] = []

    def send(self, topic: str, value: bytes, key: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Queue one record in the open unit of work."""
        self.pending.append((topic, value, key, list(headers)))

    def commit(self, cursor: bytes) -> None:
        """Make the queued records visible with ``cursor``."""
        from pipeline.model import decode

        for _topic, value, _key, headers in self.pending:
            if headers:
                self.dlq.append((value, {k: v.decode() for k, v in headers}))
            else:
                self.events.append(decode(value))
        self.pending = []
        self.cursors.append(orjson.loads(cursor))

    def last_cursor(self) -> bytes | None:
        """The last committed cursor (None before the first commit)."""
        return orjson.dumps(self.cursors[-1]) if self.cursors else None

    def close(self) -> None:
        """Abort: drop what was sent since the last commit."""
        self.pending = []


# -- running --------------------------------------------------------------------------------


def as_connector(obj: Any, options: dict[str, str] | None = None) -> Connector:
    """``obj`` as a connector: an instance as is, a class or factory called with ``options``.

    Raises ConfigError naming what is missing (``name``, ``instance``, ``fetch``, ``to_events``).
    """
    options = options or {}
    if not _looks_like_connector(obj):
        if not callable(obj):
            raise ConfigError(f"{obj!r} is neither a connector nor a class/factory making one")
        try:
            obj = obj(**options)
        except TypeError as exc:
            raise ConfigError(f"cannot make the connector with options {sorted(options)}: {exc}") from None
    elif options:
        raise ConfigError(f"options {sorted(options)} given, but the connector is an instance, not a factory")
    missing = [n for n in ("name", "instance") if not isinstance(getattr(obj, n, None), str) or not getattr(obj, n)]
    missing += [n for n in ("fetch", "to_events") if not callable(getattr(obj, n, None))]
    if missing:
        raise ConfigError(f"{type(obj).__name__} is not a connector: it lacks {', '.join(missing)} "
                          "(see pipeline.connect)")
    return obj  # type: ignore[no-any-return]


def _looks_like_connector(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "fetch", None)) and callable(
        getattr(obj, "to_events", None))


# Exceptions of a connector's to_events that mean "this record does not fit", not "stop".
_RECORD_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


def _converter(connector: Connector, scope: str | None) -> Callable[[RawRecord], list[Event]]:
    def convert(rec: RawRecord) -> list[Event]:
        try:
            events = list(connector.to_events(rec))
        except DecodeError:
            raise
        except _RECORD_ERRORS as exc:
            # A connector's own bug on an unexpected record: dead-letter it with the reason, go on.
            raise DecodeError("conversion_failed", f"{connector.name}.to_events raised {type(exc).__name__}: "
                                                   f"{exc}") from None
        bad = [e for e in events if not isinstance(e, Event)]
        if bad:
            raise DecodeError("conversion_failed", f"{connector.name}.to_events returned a "
                                                   f"{type(bad[0]).__name__}, not an Event")
        if scope is not None:
            events = [e if e.scope == scope else msgspec.structs.replace(e, scope=scope) for e in events]
        return events

    return convert


class _Progress:
    """A one-line live counter on a terminal; nothing when stderr is not one."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(name)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def tick(self, r: Report, _: RawRecord) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.name}: {r.records:,} records -> {r.events:,} events, "
                                                   f"{r.rejected:,} rejected")


def run_connector(
    connector: Connector,
    *,
    settings: Settings | None = None,
    follow: bool = False,
    interval: float = 5.0,
    scope: str | None = None,
    stop: threading.Event | None = None,
    progress: bool | None = None,
    sink: Sink | None = None,
    chunk_records: int = 500,
    chunk_seconds: float = 1.0,
    on_chunk: Callable[[Report], None] | None = None,
) -> Report:
    """Run ``connector`` exactly once into Kafka; return the totals (records, events, rejected).

    Resumes from the cursor committed by the last run of ``name:instance``. ``follow``: after
    catching up, poll ``fetch`` again every ``interval`` seconds until ``stop`` is set, SIGTERM or
    Ctrl-C. ``scope`` replaces every event's scope (the operator's tenant; default: keep the
    connector's). ``progress``: live counter on stderr (default: when stderr is a terminal).
    ``sink`` is for tests; by default a transactional Kafka sink from ``settings`` (default:
    the ``CAUSELOG_*`` environment). Kafka failures raise BusError: nothing of the open chunk is
    visible and the next run resumes after the last committed one. A failure inside ``fetch``
    raises SourceError (``once``) or is logged and retried after ``interval`` from the last
    committed cursor (``follow``). Exceptions of ``to_events`` other than DecodeError and the
    record-shape errors (KeyError, IndexError, TypeError, ValueError, AttributeError) are bugs:
    they stop the run, the open chunk aborted.
    """
    if settings is None:
        from pipeline.settings import load

        settings = load()
    s = settings
    own_sink = sink is None
    if own_sink:
        # Redaction and hashed values use the deployment's key (pipeline.hashkey), like every source.
        from pipeline.hashkey import install

        install(s)
    current = sink if sink is not None else _kafka_sink(connector, s)
    stop = stop or threading.Event()
    restore = _stop_on_sigterm(stop) if follow else None
    convert = _converter(connector, scope)
    show = sys.stderr.isatty() if progress is None else progress
    totals = Report()
    try:
        cursor = _load_cursor(current)
        while True:
            seen: list[RawRecord] = []
            try:
                with _Progress(connector.name, show) as bar:
                    report = run_source(connector.name, _tracking(connector, cursor, seen, stop), convert, current,
                                        topic=s.topic_changes, dlq=s.topic_dlq, chunk_records=chunk_records,
                                        chunk_seconds=chunk_seconds, on_progress=_chain(bar.tick, on_chunk))
            except SourceError as exc:
                _abort(current)  # the open chunk is dropped: it is read again from the committed cursor
                if not follow:
                    raise
                log.warning("%s; retrying in %gs from the last committed cursor", exc, interval)
                if own_sink:
                    current = _kafka_sink(connector, s)
                cursor = _load_cursor(current)
            else:
                if seen:
                    cursor = seen[-1].cursor
                _add(totals, report)
                if not follow or stop.is_set():
                    break
            if stop.wait(interval):
                break
    except KeyboardInterrupt:
        pass
    finally:
        if restore is not None:
            restore()
        if own_sink:
            _abort(current)
    return totals


def _load_cursor(sink: Sink) -> Any:
    raw = sink.last_cursor()
    return None if raw is None else orjson.loads(raw)


def _abort(sink: Sink) -> None:
    close = getattr(sink, "close", None)
    if close is not None:
        close()


def _tracking(connector: Connector, cursor: Any, seen: list[RawRecord],
              stop: threading.Event) -> Iterator[RawRecord]:
    """The connector's records, remembering the last one; ends early once ``stop`` is set.

    A failure inside ``fetch`` (network, API error) becomes a SourceError naming the connector.
    """
    try:
        records = iter(connector.fetch(cursor))
        while True:
            try:
                rec = next(records)
            except StopIteration:
                return
            seen[:] = [rec]
            yield rec
            if stop.is_set():
                return
    except CauselogError:
        raise
    except Exception as exc:  # the connector's I/O failed: one clear line, the run can resume
        raise SourceError(f"{connector.name}: fetch from cursor {_brief(cursor)} failed: "
                          f"{type(exc).__name__}: {exc}") from exc


def _brief(value: Any, limit: int = 60) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chain(tick: Callable[[Report, RawRecord], None],
           on_chunk: Callable[[Report], None] | None) -> Callable[[Report, RawRecord], None]:
    if on_chunk is None:
        return tick

    def both(r: Report, rec: RawRecord) -> None:
        tick(r, rec)
        on_chunk(r)

    return both


def _add(totals: Report, r: Report) -> None:
    totals.records += r.records
    totals.events += r.events
    totals.rejected += r.rejected
    totals.commits += r.commits
    for reason, n in r.reasons.items():
        totals.reasons[reason] = totals.reasons.get(reason, 0) + n


def _kafka_sink(connector: Connector, settings: Settings) -> Sink:
    from pipeline.bus import ensure_topics
    from pipeline.bus.sink import KafkaSink

    ensure_topics(settings)
    return KafkaSink(settings, f"{connector.name}:{connector.instance}")


def _stop_on_sigterm(stop: threading.Event) -> Callable[[], None] | None:
    """SIGTERM ends a follower at the next record boundary (its chunk is committed first)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)

    return restore

