"""PostgreSQL server logs -> change events (database source; parsing and mapping are pure).

Parsing (text in, :class:`LogRecord` out; no I/O)
-------------------------------------------------
Each parser takes the log text (a ``str``) or an iterable of lines *with* their line endings
(``file`` objects give those), yields :class:`LogRecord` values in file order and, when given a
``stats`` :class:`collections.Counter`, counts what it saw: ``records`` and, for lines that are
not log records, ``blank_lines``, ``orphan_lines`` (text before the first record),
``not_a_log_record`` (JSON lines of other programs, e.g. the CloudNativePG operator),
``bad_json``, ``bad_column_count``, ``csv_error``. Continuation lines of multi-line records are
counted as ``continuation_lines``. A malformed line never raises.

- :func:`parse_csvlog` -- ``log_destination = csvlog``. Both layouts: 23 columns (PostgreSQL
  <= 12), 24 (13: ``backend_type``), 25 (``leader_pid``) and 26 (14+: ``query_id``). Quoted
  fields may span lines (multi-line statements); ``line``/``line_end`` say which.
- :func:`parse_jsonlog` -- ``log_destination = jsonlog`` (PostgreSQL 15+ keys ``timestamp``,
  ``user``, ``dbname``, ``ps``, ``txid``, ``statement``...) and CloudNativePG's wrapper
  (``{"logger": "postgres", "msg": "record", "record": {<csvlog column names>}}``); the pod name
  is kept in ``extra["logging_pod"]``. Operator lines are ``not_a_log_record``.
- :func:`parse_stderr` -- ``log_destination = stderr`` with a known ``log_line_prefix``.
  :func:`compile_prefix` understands ``%a %u %d %r %h %b %p %P %t %m %n %i %e %c %l %s %v %x %Q
  %q %%`` (and padding such as ``%-10u``); ``%q`` makes the rest of the prefix optional, as for
  background processes. Tested prefixes (:data:`KNOWN_PREFIXES`): ``'%m [%p] %q%u@%d '`` (the
  Debian/Ubuntu default), ``'%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h '`` (pgBadger's
  recommended one), ``'%m [%p] [queryid=%Q] %q%u@%d '``, ``'%m [%p] '``. Without ``prefix`` the
  best matching known prefix is picked from the first lines. Lines beginning with a tab (and any
  other line that does not start a record) continue the previous record; ``DETAIL``, ``HINT``,
  ``CONTEXT``, ``STATEMENT``, ``QUERY`` lines of the same process fill those fields of the record
  before them (``STATEMENT`` -> ``query``, ``QUERY`` -> ``internal_query``).
- :func:`parse_cloudsql` -- Google Cloud Logging export of Cloud SQL for PostgreSQL (JSON Lines,
  ``textPayload`` with the fixed prefix ``'[%p]: [%l-1] db=%d,user=%u '``, time from
  ``timestamp``; payloads starting with a tab continue the previous entry; ``[unknown]`` is no
  value). ``extra["database_id"]`` keeps ``resource.labels.database_id``.
- :func:`parse_pgaudit_transcript` -- the pgaudit regression transcript (``expected/*.out``):
  see its docstring.
- :func:`parse` picks one of the above with :func:`detect_format` (``format="auto"``): a psql
  transcript by its ``AUDIT:`` lines without timestamps, else from the first non-blank line;
  ``ingest postgres-log`` and ``rules test --on`` share it.

Sessions. csvlog and jsonlog carry ``session_id`` (``%c``: hex start time ``.`` hex pid). For
stderr it is taken from ``%c``; else, with ``%s`` (session start) and ``%p``, it is computed the
way the server does (``f"{start_epoch:x}.{pid:x}"``); else it is *derived* from the log itself:
a ``connection received``/``connection authorized`` line of pid P at time T opens
``f"{int(T):x}.{P:x}"`` for P, the following records of P carry it, and ``disconnection`` closes
it (``session_id_derived = True``; it equals the server's ``%c`` unless the backend started in
the second before its first log line). Records of a pid with no connection line seen carry no
session id: pids are reused, so a pid alone is not a session.

Parallel workers. A query run with parallel workers logs from each worker too (csvlog/jsonlog
``backend_type = parallel worker``, ``leader_pid`` = the leader's pid; stderr with ``%b``/``%P``).
A worker's record has no user or database and its *own* ``session_id`` (the worker process's),
which is no client session. pgaudit logs every line of the statement once more from each worker
(the worker runs the executor with the leader's settings and role, after the leader logged its
line; the worker numbers statements itself, so only the ids differ). The stateful reading stage
(:func:`fetch_log`, :func:`fetch_records`; :class:`ParallelLeaders`) remembers, from the records
of each client backend, leader pid -> (session id, user, database, its recent pgaudit lines) and:

- drops a worker's ``AUDIT:`` line and counts it in ``stats``: ``parallel_worker_repeats`` when the
  leader's identical line (ids and row count aside) was read, ``parallel_worker_repeats_unverified``
  when it was not (it lies before where the reading started). The choice: one statement is one
  event; the worker's line adds no fact the leader's line lacks but would count the statement N+1
  times and, having no role, would make a query by nobody. Dropping it is counted, never silent
  (the ingest prints the stats that are not records). :func:`to_events` alone (records from
  :func:`parse`) also turns a worker's ``AUDIT:`` line into no event (``parallel_worker_repeats``).
- gives the worker's other records (its ``ERROR``, the ``FATAL`` of a worker its leader
  terminated...) the leader's user and database (where the worker wrote none) and
  ``leader_session_id``; :func:`to_events` links them to ``session:postgres:<server>:<leader
  session>`` and ``raw`` says so (``leader_pid``, ``leader_session_id``, ``inherited_from_leader``;
  ``raw.pid``/``raw.session_id`` stay the worker's, and so does the event id).

Across runs: :func:`fetch_log` keeps the 64 most recently active leaders in its cursor
(``leaders``), so a read resumed between a leader's line and its workers' lines gives the same
result. Fallback, when a worker's leader is unknown (its records are before the read and not in
the cursor, e.g. a cursor of an older version): the worker's ``AUDIT:`` lines are still dropped
(``..._unverified``); its other records get no session link (never the worker's own session id),
keep ``raw.leader_pid``, and their actor stays ``postgres:<server>:unknown`` (the line names no
role) -- a leader's session id cannot be derived from a worker's record (it needs the leader's
start time), and the leader's next record makes the following worker records its own again.

Times: ``%t``/``%m``/csvlog times carry a zone abbreviation; :data:`TZ_ABBREVIATIONS` maps the
common ones (``CST`` is US Central, ``IST`` is India; override with ``tz_abbrevs``). An unknown
abbreviation leaves ``time`` unset and :func:`to_events` rejects the record.

Mapping (:func:`to_events`, pure)
---------------------------------
``to_events(record, *, scope, server)`` returns zero or one envelope. ``server`` names the
cluster (e.g. ``prod-db-1``); it is part of every key, because session and transaction ids are
only unique per server.

===================================================  =============================================
``connection authorized: user=... database=...``     ``db.session.started`` (action ``connect``)
(also ``replication connection authorized``)
``disconnection: session time: ...``                 ``db.session.ended`` (action ``disconnect``)
``FATAL`` authentication failures                    ``db.session.started``, outcome ``failure``
``statement: ...``, ``execute <name>: ...``,         by the statement's class (pgaudit's classes,
``duration: ... statement|execute ...``, and         :func:`pipeline.sources.pgsql.statement_class`):
``ERROR``/``FATAL`` records that carry the           ``ROLE`` -> ``access.db.<command>``
statement (csvlog ``query``, stderr ``STATEMENT``)   (``access.db.grant``, ``access.db.revoke``,
                                                     ``access.db.create_role``,
``AUDIT: SESSION|OBJECT,...`` (pgaudit; the          ``access.db.alter_role``, ``access.db.drop_role``,
command and class come from the audit line)          ``access.db.alter_default_privileges``...);
                                                     ``DDL`` -> ``db.ddl``; ``WRITE`` -> ``db.write``;
                                                     ``READ`` -> ``db.query``; ``FUNCTION`` ->
                                                     ``db.function``; ``MISC``/``MISC_SET`` -> ``db.misc``
anything else (checkpoints, autovacuum,              no event; counted in ``stats`` as ``unmapped``
``connection received``, ``parse``/``bind`` phases   (``extended_protocol_phase`` for parse/bind,
of the extended protocol, ``duration`` alone...)     whose ``execute`` line is the event)
===================================================  =============================================

``action`` is the lower-case command tag (``create table``, ``grant``). Outcome: ``success``
for ``duration: ...`` lines (logged after the statement finished), ``failure`` for ``ERROR``/
``FATAL`` records, ``unknown`` for ``statement:``/``execute`` lines (logged before execution)
and pgaudit lines (logged as the statement runs).

Statements are never stored: the statement text is replaced by
:func:`pipeline.sources.pgsql.analyze`'s normalised form and the keyed hash of the full text
(``hmac-sha256:v1:<32 hex>``, :mod:`pipeline.sources.keyed`; password literals scrubbed before
hashing), everywhere -- ``raw.message`` shows the normalised statement, ``raw.statement`` holds
``{normalized, hash, command, class, ...}``. ``detail`` and ``context`` (which quote bind
parameters and row values) are dropped and only their keyed hash is kept (``detail_hash``,
``context_hash``, ``internal_query_hash``); ``hint`` and error messages go through
:func:`~pipeline.sources.pgsql.scrub_message` (quoted parts and numbers -> ``?``). pgaudit's parameter field is kept only when it is a
placeholder (``<not logged>``...), else it becomes ``<redacted>``. The other raw fields go
through :func:`~pipeline.sources.redact.redact`.

Links:

- ``session:postgres:<server>:<session_id>`` (see Sessions above);
- ``trace:<32 hex>`` from a sqlcommenter ``traceparent`` in the statement;
- ``request:pgtx:<server>:<xid>`` when the record carries a transaction id (csvlog
  ``transaction_id``, jsonlog ``txid``, stderr ``%x``; ``0`` means none). Debezium change
  events of the same transaction carry the same key
  (:mod:`pipeline.sources.debezium`), so a data change joins the session that made it.

Actor: ``postgres:<server>:<role>`` (principal = the role name); ``postgres:<server>:unknown``
(assurance ``none``) when the log line has no user (``%u`` missing from the prefix). Assurance
``authenticated`` (``verified``) only when the server checked a credential for the session: its
``connection authenticated: identity="..." method=<m>`` line (PostgreSQL 14+ with
``log_connections = on``) was read and ``<m>`` is not ``trust`` nor ``ident``
(:data:`UNVERIFIED_METHODS`; PostgreSQL 18 logs trust connections as ``connection
authenticated: user="..." method=trust``). Otherwise -- trust authentication, PostgreSQL 13 or
older, ``log_connections`` off, or a session whose line lies before where the reading started
(and is not in the cursor) -- the role is only ``claimed``: the log shows no check of it. The
line itself makes no event (counted as ``authentication``); :class:`SessionAuthentications`
(in :func:`fetch_log`, :func:`fetch_records`) attaches its method and identity to the session's
later records until its ``disconnection`` (``raw.auth_method``, ``raw.auth_identity``: the
identity the method established, e.g. a certificate's CN, which may differ from the role).
:func:`to_events` on records straight from :func:`parse` sees no authentication. pgaudit logs
statements, not connections: it has no equivalent line. A failed login's actor is ``claimed``. Target: the statement's main object when known (``db.table``,
``db.role``, ``db.function``..., id ``<server>/<database>/<name>``; roles are cluster-wide:
``<server>/<role>``), else the database (``db.database``, id ``<server>/<database>``), else the
server (``db.server``). For ``GRANT``/``REVOKE`` the target is the object the privilege is on
and ``subject`` names the grantees (``to regress_user2, regress_user1``).

Id: ``event_id("postgres", server, session_id, session_line, <keyed hash of the message>)`` when
the server wrote both (csvlog, jsonlog, stderr with ``%c`` and ``%l``): the same record read from a csvlog
and a jsonlog of one server gets one id (the message hash only guards against edited logs that
repeat a line number, as two pgBadger fixtures do). Otherwise (derived session ids, no ``%l``) the id comes from
pid, ``%l``, the time, the record's position in the file and a hash of its text: stable for
the same file, and distinct even where a log repeats a line number. ``source`` is ``postgres://<server>``;
``source_seq`` the byte offset of the record (or its line number).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import DecodeError
from pipeline.model import Event, event_id
from pipeline.sources import keyed, pgsql
from pipeline.sources._normalize import build, fail, slug
from pipeline.sources.redact import redact

__all__ = [
    "KNOWN_PREFIXES",
    "TZ_ABBREVIATIONS",
    "UNVERIFIED_METHODS",
    "LogRecord",
    "ParallelLeaders",
    "SessionAuthentications",
    "compile_prefix",
    "detect_format",
    "fetch_log",
    "fetch_records",
    "log_files",
    "parse",
    "parse_cloudsql",
    "parse_csvlog",
    "parse_jsonlog",
    "parse_pg_time",
    "parse_pgaudit_transcript",
    "parse_stderr",
    "to_events",
]


@dataclass(frozen=True)
class LogRecord:
    """One server log record, whatever the log format (fields absent from a format are None)."""

    format: str  # csvlog | jsonlog | cnpg | stderr | cloudsql | pgaudit-transcript
    time: datetime | None
    message: str
    severity: str = ""
    pid: int | None = None
    session_id: str | None = None
    session_id_derived: bool = False
    session_line: int | None = None
    session_start: datetime | None = None
    user: str | None = None
    database: str | None = None
    application_name: str | None = None
    client: str | None = None  # connection_from / %r / %h: "host:port", "host(port)", "[local]"
    command_tag: str | None = None
    virtual_xid: str | None = None
    xid: str | None = None  # None when the server wrote 0
    sql_state: str | None = None
    detail: str | None = None
    hint: str | None = None
    context: str | None = None
    query: str | None = None  # the statement an error refers to (csvlog query, STATEMENT:)
    query_pos: int | None = None
    internal_query: str | None = None
    backend_type: str | None = None
    leader_pid: int | None = None
    query_id: str | None = None
    #: a parallel worker's leader: its session id and what the worker record took from it (set
    #: by :class:`ParallelLeaders`, i.e. :func:`fetch_log` and :func:`fetch_records`)
    leader_session_id: str | None = None
    inherited: tuple[str, ...] = ()
    #: how the server authenticated the record's session, from its ``connection authenticated``
    #: line (set by :class:`SessionAuthentications`, i.e. :func:`fetch_log` and
    #: :func:`fetch_records`): the pg_hba method and the identity it established
    auth_method: str | None = None
    auth_identity: str | None = None
    line: int | None = None
    line_end: int | None = None
    offset: int | None = None
    time_text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# time

#: Zone abbreviations PostgreSQL writes in ``%t``/``%m``/csvlog times, as UTC offsets in minutes.
TZ_ABBREVIATIONS: dict[str, int] = {
    "UTC": 0, "GMT": 0, "UCT": 0, "Z": 0, "WET": 0, "WEST": 60, "BST": 60, "IST": 330,
    "CET": 60, "CEST": 120, "MET": 60, "MEST": 120, "EET": 120, "EEST": 180, "MSK": 180,
    "WAT": 60, "CAT": 120, "SAST": 120, "EAT": 180, "PKT": 300, "ICT": 420, "WIB": 420,
    "HKT": 480, "SGT": 480, "AWST": 480, "JST": 540, "KST": 540, "ACST": 570, "ACDT": 630,
    "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780, "HST": -600, "AKST": -540,
    "AKDT": -480, "PST": -480, "PDT": -420, "MST": -420, "MDT": -360, "CST": -360,
    "CDT": -300, "EST": -300, "EDT": -240, "AST": -240, "ADT": -180, "BRT": -180, "ART": -180,
}  # fmt: skip

_PG_TIME = re.compile(
    r"\s*(?P<date>\d{4}-\d{2}-\d{2})[ T](?P<clock>\d{2}:\d{2}:\d{2}(?:\.\d+)?)"
    r"(?:\s*(?P<zone>[A-Za-z]{1,6}|[+-]\d{1,2}(?::?\d{2})?))?\s*$"
)


def parse_pg_time(text: str | None, tz_abbrevs: dict[str, int] | None = None) -> datetime | None:
    """An aware UTC datetime from a PostgreSQL log time (``2021-01-22 10:03:22.785 CET``,
    ``... +03``, ``...Z``) or epoch seconds (``%n``); None when unparseable or the zone is unknown.
    A time without zone is taken as UTC."""
    if not text:
        return None
    text = text.strip()
    if re.fullmatch(r"\d{9,11}(?:\.\d+)?", text):
        return datetime.fromtimestamp(float(text), UTC)
    m = _PG_TIME.match(text)
    if not m:
        return None
    zone = m.group("zone")
    offset_min = 0
    if zone:
        if zone[0] in "+-":
            digits = zone[1:].replace(":", "")
            hours = int(digits[:-2] if len(digits) > 2 else digits)
            minutes = int(digits[-2:]) if len(digits) > 2 else 0
            offset_min = (hours * 60 + minutes) * (-1 if zone[0] == "-" else 1)
        else:
            table = {**TZ_ABBREVIATIONS, **(tz_abbrevs or {})}
            if zone.upper() not in table:
                return None
            offset_min = table[zone.upper()]
    clock = m.group("clock")
    if "." in clock:
        main, frac = clock.split(".", 1)
        clock = f"{main}.{(frac + '000000')[:6]}"
    try:
        naive = datetime.fromisoformat(f"{m.group('date')}T{clock}")
    except ValueError:
        return None
    return naive.replace(tzinfo=timezone(timedelta(minutes=offset_min))).astimezone(UTC)


# --------------------------------------------------------------------------------------------
# small helpers


def _lines(source: str | Iterable[str]) -> Iterable[str]:
    return source.splitlines(keepends=True) if isinstance(source, str) else source


def _peek(lines: Iterable[str], n: int) -> tuple[list[str], Iterator[str]]:
    """The first ``n`` lines, and an iterator that still yields all of them (streams stay lazy)."""
    it = iter(lines)
    head = list(itertools.islice(it, n))
    return head, itertools.chain(head, it)


def _none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text != "" else None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _xid(value: Any) -> str | None:
    text = _none(value)
    return None if text in (None, "0") else text


def _count(stats: Counter[str] | None, key: str, n: int = 1) -> None:
    if stats is not None:
        stats[key] += n


def _strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


# --------------------------------------------------------------------------------------------
# csvlog

_CSV_BASE = (
    "log_time", "user_name", "database_name", "process_id", "connection_from", "session_id",
    "session_line_num", "command_tag", "session_start_time", "virtual_transaction_id",
    "transaction_id", "error_severity", "sql_state_code", "message", "detail", "hint",
    "internal_query", "internal_query_pos", "context", "query", "query_pos", "location",
    "application_name",
)  # fmt: skip
_CSV_LAYOUTS = {
    23: _CSV_BASE,
    24: (*_CSV_BASE, "backend_type"),
    25: (*_CSV_BASE, "backend_type", "leader_pid"),
    26: (*_CSV_BASE, "backend_type", "leader_pid", "query_id"),
}

# jsonlog (PostgreSQL 15+) key -> csvlog column name
_JSONLOG_KEYS = {
    "timestamp": "log_time", "user": "user_name", "dbname": "database_name", "pid": "process_id",
    "session_id": "session_id", "line_num": "session_line_num", "ps": "command_tag",
    "session_start": "session_start_time", "vxid": "virtual_transaction_id", "txid": "transaction_id",
    "error_severity": "error_severity", "state_code": "sql_state_code", "message": "message",
    "detail": "detail", "hint": "hint", "internal_query": "internal_query",
    "internal_position": "internal_query_pos", "context": "context", "statement": "query",
    "cursor_position": "query_pos", "application_name": "application_name",
    "backend_type": "backend_type", "leader_pid": "leader_pid", "query_id": "query_id",
}  # fmt: skip


def _from_columns(cols: dict[str, Any], fmt: str, tz_abbrevs: dict[str, int] | None, **pos: Any) -> LogRecord:
    time_text = _none(cols.get("log_time"))
    client = _none(cols.get("connection_from"))
    if client is None and _none(cols.get("remote_host")):
        host, port = cols.get("remote_host"), _none(cols.get("remote_port"))
        client = f"{host}:{port}" if port else str(host)
    return LogRecord(
        format=fmt,
        time=parse_pg_time(time_text, tz_abbrevs),
        time_text=time_text,
        message=str(cols.get("message") or ""),
        severity=str(cols.get("error_severity") or ""),
        pid=_int(cols.get("process_id")),
        session_id=_none(cols.get("session_id")),
        session_line=_int(cols.get("session_line_num")),
        session_start=parse_pg_time(_none(cols.get("session_start_time")), tz_abbrevs),
        user=_none(cols.get("user_name")),
        database=_none(cols.get("database_name")),
        application_name=_none(cols.get("application_name")),
        client=client,
        command_tag=_none(cols.get("command_tag")),
        virtual_xid=_none(cols.get("virtual_transaction_id")),
        xid=_xid(cols.get("transaction_id")),
        sql_state=_none(cols.get("sql_state_code")),
        detail=_none(cols.get("detail")),
        hint=_none(cols.get("hint")),
        context=_none(cols.get("context")),
        query=_none(cols.get("query")),
        query_pos=_int(cols.get("query_pos")),
        internal_query=_none(cols.get("internal_query")),
        backend_type=_none(cols.get("backend_type")),
        leader_pid=_int(cols.get("leader_pid")),
        query_id=_xid(cols.get("query_id")),
        **pos,
    )


class _Tracker:
    """Line numbers and byte offsets of the lines a consumer pulls."""

    def __init__(self, source: str | Iterable[str]) -> None:
        self.source = iter(_lines(source))
        self.lines = 0
        self.offset = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self.source)
        self.lines += 1
        self.offset += len(line.encode("utf-8", "surrogatepass"))
        return line


_FIELD_LIMIT = 64 * 1024 * 1024


def parse_csvlog(
    source: str | Iterable[str],
    *,
    stats: Counter[str] | None = None,
    tz_abbrevs: dict[str, int] | None = None,
) -> Iterator[LogRecord]:
    """Records of a csvlog file (23/24/25/26-column layouts; see the module docstring)."""
    if csv.field_size_limit() < _FIELD_LIMIT:  # statements longer than 128 KiB are real
        csv.field_size_limit(min(_FIELD_LIMIT, sys.maxsize))
    tracker = _Tracker(source)
    reader = csv.reader(tracker)
    while True:
        start_line, start_offset = tracker.lines + 1, tracker.offset
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            _count(stats, "csv_error")
            continue
        _count(stats, "continuation_lines", tracker.lines - start_line)
        if not row or (len(row) == 1 and not row[0].strip()):
            _count(stats, "blank_lines")
            continue
        names = _CSV_LAYOUTS.get(len(row))
        if names is None:
            _count(stats, "bad_column_count")
            continue
        _count(stats, "records")
        yield _from_columns(
            dict(zip(names, row, strict=True)),
            "csvlog",
            tz_abbrevs,
            line=start_line,
            line_end=tracker.lines,
            offset=start_offset,
        )


def _json_lines(source: str | Iterable[str], stats: Counter[str] | None) -> Iterator[tuple[int, int, Any]]:
    """(line number, byte offset, parsed value) of each JSON line; blank and bad lines are counted."""
    offset = 0
    for number, line in enumerate(_lines(source), start=1):
        start = offset
        offset += len(line.encode("utf-8", "surrogatepass"))
        if not line.strip():
            _count(stats, "blank_lines")
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            _count(stats, "bad_json")
            continue
        yield number, start, obj


def parse_jsonlog(
    source: str | Iterable[str],
    *,
    stats: Counter[str] | None = None,
    tz_abbrevs: dict[str, int] | None = None,
) -> Iterator[LogRecord]:
    """Records of a PostgreSQL 15+ jsonlog file or a CloudNativePG log (JSON Lines)."""
    for number, start, obj in _json_lines(source, stats):
        if not isinstance(obj, dict):
            _count(stats, "not_a_log_record")
            continue
        pos = {"line": number, "line_end": number, "offset": start}
        inner = obj.get("record")
        if isinstance(inner, dict) and ("message" in inner or "error_severity" in inner):
            record = _from_columns(inner, "cnpg", tz_abbrevs, **pos)
            extra = {k: obj[k] for k in ("logging_pod",) if isinstance(obj.get(k), str)}
            record = _with(record, extra=extra)
        elif "error_severity" in obj and "timestamp" in obj:
            cols = {_JSONLOG_KEYS.get(str(k), str(k)): v for k, v in obj.items()}
            record = _from_columns(cols, "jsonlog", tz_abbrevs, **pos)
        else:
            _count(stats, "not_a_log_record")
            continue
        _count(stats, "records")
        yield record


def _with(record: LogRecord, **changes: Any) -> LogRecord:
    return replace(record, **changes)


# --------------------------------------------------------------------------------------------
# stderr

_SEVERITY = r"(?P<severity>[A-Z][A-Z0-9]*):\s{1,2}(?P<message>.*)"
_ESCAPES: dict[str, tuple[str, str]] = {
    # escape: (group name, regex)
    "a": ("application_name", r".*?"),
    "u": ("user", r"\S*?"),
    "d": ("database", r"[^\s@]*?"),
    "r": ("client", r"\S*?"),
    "h": ("client_host", r"\S*?"),
    "b": ("backend_type", r".*?"),
    "p": ("pid", r"\d+"),
    "P": ("leader_pid", r"\d*"),
    "t": ("time", r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?: ?[A-Za-z]{1,6}| ?[+-]\d{1,2}(?::?\d{2})?)?"),
    "m": (
        "time",
        r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+(?: ?[A-Za-z]{1,6}| ?[+-]\d{1,2}(?::?\d{2})?)?",
    ),
    "n": ("time", r"\d+\.\d+"),
    "i": ("command_tag", r".*?"),
    "e": ("sql_state", r"[0-9A-Z]{5}"),
    "c": ("session_id", r"[0-9a-f]+\.[0-9a-f]+"),
    "l": ("session_line", r"\d+"),
    "s": (
        "session_start",
        r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?: ?[A-Za-z]{1,6}| ?[+-]\d{1,2}(?::?\d{2})?)?",
    ),
    "v": ("virtual_xid", r"\S*?"),
    "x": ("xid", r"\d*"),
    "Q": ("query_id", r"-?\d+"),
}

#: ``log_line_prefix`` values tried, in order, when :func:`parse_stderr` is given none.
KNOWN_PREFIXES: tuple[str, ...] = (
    "%m [%p] %q%u@%d ",
    "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",
    "%m [%p] [queryid=%Q] %q%u@%d ",
    "%m [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",
    "%t [%p]: [%l-1] ",
    "%m [%p] ",
    "%t [%p] ",
    "%m %c %q%u@%d ",
)
CLOUDSQL_PREFIX = "[%p]: [%l-1] db=%d,user=%u "

_ATTACHED = {"DETAIL": "detail", "HINT": "hint", "CONTEXT": "context", "STATEMENT": "query", "QUERY": "internal_query"}  # fmt: skip
_ATTACHED_ALSO = frozenset({"LOCATION"})


def compile_prefix(prefix: str) -> re.Pattern[str]:
    """A regex matching one stderr log line written with ``log_line_prefix = prefix``."""
    out: list[str] = []
    optional_from: int | None = None
    used: set[str] = set()
    i = 0
    while i < len(prefix):
        c = prefix[i]
        if c != "%":
            out.append(re.escape(c))
            i += 1
            continue
        m = re.match(r"%(-?\d+)?(.)", prefix[i:])
        if not m:
            out.append(re.escape(c))
            i += 1
            continue
        width, esc = m.group(1), m.group(2)
        i += m.end()
        if esc == "%":
            out.append("%")
        elif esc == "q":
            optional_from = len(out)
        elif esc in _ESCAPES:
            name, pattern = _ESCAPES[esc]
            if name in used:  # the same escape twice: match it, keep the first
                out.append(f"(?:{pattern})")
            else:
                used.add(name)
                body = f"(?P<{name}>{pattern})"
                out.append(rf"\s*{body}\s*" if width else body)
        else:  # an escape we do not know: anything up to the next literal
            out.append(r".*?")
    if optional_from is not None:
        out = [*out[:optional_from], "(?:" + "".join(out[optional_from:]) + ")?"]
    return re.compile("^" + "".join(out) + _SEVERITY + r"$", re.S)


class _Assembler:
    """Turns prefixed lines into records: merges continuation and DETAIL/STATEMENT lines,
    derives session ids (see the module docstring)."""

    def __init__(
        self,
        fmt: str,
        stats: Counter[str] | None,
        tz_abbrevs: dict[str, int] | None,
        sessions: dict[int, str] | None = None,
    ) -> None:
        self.fmt = fmt
        self.stats = stats
        self.tz = tz_abbrevs
        self.current: dict[str, Any] | None = None
        self.field = "message"
        self.sessions: dict[int, str] = {} if sessions is None else sessions

    def primary(
        self,
        groups: dict[str, Any],
        *,
        line: int,
        offset: int,
        time_text: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Iterator[LogRecord]:
        severity = groups["severity"]
        pid = _int(groups.get("pid"))
        cur = self.current
        attached = severity in _ATTACHED or severity in _ATTACHED_ALSO
        if attached and cur is not None and (pid is None or cur.get("pid") in (None, pid)):
            name = _ATTACHED.get(severity)
            if name is not None:
                cur[name] = (
                    groups["message"] if cur.get(name) is None else f"{cur[name]}\n{groups['message']}"
                )
                self.field = name
            else:
                self.field = "_ignored"
            cur["line_end"] = line
            _count(self.stats, "continuation_lines")
            return
        yield from self.flush()
        rec: dict[str, Any] = {
            "severity": severity,
            "message": groups["message"],
            "pid": pid,
            "line": line,
            "line_end": line,
            "offset": offset,
            "time_text": time_text if time_text is not None else groups.get("time"),
            "extra": extra or {},
        }
        for key in ("user", "database", "application_name", "backend_type", "command_tag", "sql_state"):
            value = groups.get(key)
            rec[key] = None if value in (None, "", "[unknown]") else value
        client = groups.get("client") or groups.get("client_host")
        rec["client"] = client or None
        rec["session_id"] = groups.get("session_id") or None
        rec["session_line"] = _int(groups.get("session_line"))
        rec["session_start"] = parse_pg_time(groups.get("session_start"), self.tz)
        rec["virtual_xid"] = groups.get("virtual_xid") or None
        rec["xid"] = _xid(groups.get("xid"))
        rec["leader_pid"] = _int(groups.get("leader_pid"))
        rec["query_id"] = _xid(groups.get("query_id"))
        self.current = rec
        self.field = "message"

    def continuation(self, text: str, line: int) -> bool:
        if self.current is None:
            return False
        body = text[1:] if text.startswith("\t") else text
        if self.field != "_ignored":
            self.current[self.field] = f"{self.current.get(self.field) or ''}\n{body}"
        self.current["line_end"] = line
        return True

    def flush(self) -> Iterator[LogRecord]:
        rec, self.current = self.current, None
        if rec is None:
            return
        time = parse_pg_time(rec["time_text"], self.tz)
        pid = rec["pid"]
        derived = False
        if rec["session_id"] is None and pid is not None:
            if rec["session_start"] is not None:
                rec["session_id"] = f"{int(rec['session_start'].timestamp()):x}.{pid:x}"
            else:
                message = rec["message"]
                if (
                    message.startswith("connection received:")
                    and time is not None
                    or _AUTHORIZED.match(message)
                    and pid not in self.sessions
                    and time is not None
                ):
                    self.sessions[pid] = f"{int(time.timestamp()):x}.{pid:x}"
                if message.startswith("disconnection:"):
                    rec["session_id"] = self.sessions.pop(pid, None)
                else:
                    rec["session_id"] = self.sessions.get(pid)
                derived = rec["session_id"] is not None
        _count(self.stats, "records")
        yield LogRecord(
            format=self.fmt,
            time=time,
            message=rec["message"],
            severity=rec["severity"],
            pid=pid,
            session_id=rec["session_id"],
            session_id_derived=derived,
            session_line=rec["session_line"],
            session_start=rec["session_start"],
            user=rec["user"],
            database=rec["database"],
            application_name=rec["application_name"],
            client=rec["client"],
            command_tag=rec["command_tag"],
            virtual_xid=rec["virtual_xid"],
            xid=rec["xid"],
            sql_state=rec["sql_state"],
            detail=rec.get("detail"),
            hint=rec.get("hint"),
            context=rec.get("context"),
            query=rec.get("query"),
            internal_query=rec.get("internal_query"),
            backend_type=rec["backend_type"],
            leader_pid=rec["leader_pid"],
            query_id=rec["query_id"],
            line=rec["line"],
            line_end=rec["line_end"],
            offset=rec["offset"],
            time_text=rec["time_text"],
            extra=rec["extra"],
        )


def _detect_prefix(lines: list[str]) -> str:
    best, best_hits = KNOWN_PREFIXES[0], 0
    sample = [_strip_eol(line) for line in lines if line.strip() and not line.startswith("\t")][:200]
    for prefix in KNOWN_PREFIXES:
        regex = compile_prefix(prefix)
        hits = 0
        for line in sample:
            if regex.match(line):
                hits += 1
        if hits > best_hits:
            best, best_hits = prefix, hits
    return best


def parse_stderr(
    source: str | Iterable[str],
    *,
    prefix: str | None = None,
    stats: Counter[str] | None = None,
    tz_abbrevs: dict[str, int] | None = None,
    sessions: dict[int, str] | None = None,
) -> Iterator[LogRecord]:
    """Records of a stderr log written with ``log_line_prefix = prefix`` (see the module docstring)."""
    lines: Iterable[str] = _lines(source)
    if prefix is None:
        head, lines = _peek(lines, 200)
        prefix = _detect_prefix(head)
    regex = compile_prefix(prefix)
    asm = _Assembler("stderr", stats, tz_abbrevs, sessions)
    offset = 0
    for number, raw_line in enumerate(lines, start=1):
        start = offset
        offset += len(raw_line.encode("utf-8", "surrogatepass"))
        line = _strip_eol(raw_line)
        m = None if line.startswith("\t") else regex.match(line)
        if m:
            yield from asm.primary(m.groupdict(), line=number, offset=start)
        elif not line.strip():
            yield from asm.flush()
            _count(stats, "blank_lines")
        elif asm.continuation(line, number):
            _count(stats, "continuation_lines")
        else:
            _count(stats, "orphan_lines")
    yield from asm.flush()


def parse_cloudsql(
    source: str | Iterable[str],
    *,
    stats: Counter[str] | None = None,
    tz_abbrevs: dict[str, int] | None = None,
    sessions: dict[int, str] | None = None,
) -> Iterator[LogRecord]:
    """Records of a Cloud Logging export of Cloud SQL for PostgreSQL (JSON Lines, ``textPayload``)."""
    regex = compile_prefix(CLOUDSQL_PREFIX)
    asm = _Assembler("cloudsql", stats, tz_abbrevs, sessions)
    for number, start, obj in _json_lines(source, stats):
        text = obj.get("textPayload") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            _count(stats, "not_a_log_record")
            continue
        text = text.rstrip("\n")
        m = None if text.startswith("\t") else regex.match(text)
        if m:
            labels = (
                obj.get("resource", {}).get("labels", {}) if isinstance(obj.get("resource"), dict) else {}
            )
            extra = (
                {"database_id": labels.get("database_id")}
                if isinstance(labels, dict) and labels.get("database_id")
                else {}
            )
            if isinstance(obj.get("insertId"), str):
                extra["insert_id"] = obj["insertId"]
            ts = obj.get("timestamp")
            yield from asm.primary(
                m.groupdict(),
                line=number,
                offset=start,
                time_text=ts if isinstance(ts, str) else None,
                extra=extra,
            )
        elif asm.continuation(text, number):
            _count(stats, "continuation_lines")
        else:
            _count(stats, "orphan_lines")
    yield from asm.flush()


# --------------------------------------------------------------------------------------------
# pgaudit regression transcript

_TRANSCRIPT_AUDIT = re.compile(r"^(?P<severity>[A-Z]+):\s+(?P<message>AUDIT: .*)$", re.S)
_CONNECT = re.compile(r"^\\c(?:onnect)?(?:\s+(?P<db>\S+))?(?:\s+(?P<user>\S+))?")
TRANSCRIPT_BASE_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def parse_pgaudit_transcript(
    text: str | Iterable[str],
    *,
    base_time: datetime = TRANSCRIPT_BASE_TIME,
    database: str | None = None,
    stats: Counter[str] | None = None,
) -> Iterator[LogRecord]:
    """``AUDIT:`` records of a psql transcript such as pgaudit's ``expected/pgaudit.out``.

    A record starts at a ``<LEVEL>:  AUDIT: `` line (the regression test logs at ``NOTICE`` or
    ``WARNING`` to the client) and continues over the following lines while its CSV quoting is
    open (multi-line statements). A transcript has no log prefix, so what a server log would
    say is synthesised, deterministically:

    - ``time`` = ``base_time`` + the record's line number in seconds (file order is time order);
    - ``session_id`` = ``pgaudit-transcript.<n>``, where n counts ``\\connect`` lines (0 before the
      first), ``session_line`` counts records within it; ``session_id_derived`` is true;
    - ``user`` = the user named by the last ``\\connect - <user>``; a psql variable
      (``:current_user``) is unknown (None), as is the user before the first ``\\connect``;
    - ``database`` = ``database`` (the ``\\connect`` database when one is named);
    - ``pid``, ``xid`` are None; ``format`` is ``pgaudit-transcript``.
    """
    lines = [_strip_eol(line) for line in _lines(text)]
    session, seq, user, db = 0, 0, None, database
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _CONNECT.match(line)
        if m:
            session, seq = session + 1, 0
            arg_db, arg_user = m.group("db"), m.group("user")
            if arg_db and arg_db != "-":
                db = None if arg_db.startswith(":") else arg_db.strip('"')
            user = None if not arg_user or arg_user.startswith(":") else arg_user.strip('"').rstrip(";")
            i += 1
            continue
        m = _TRANSCRIPT_AUDIT.match(line)
        if not m:
            i += 1
            continue
        first = i
        message = m.group("message")
        while message.count('"') % 2 and i + 1 < len(lines):
            i += 1
            message += "\n" + lines[i]
        seq += 1
        _count(stats, "records")
        _count(stats, "continuation_lines", i - first)
        yield LogRecord(
            format="pgaudit-transcript",
            time=base_time + timedelta(seconds=first + 1),
            message=message,
            severity=m.group("severity"),
            session_id=f"pgaudit-transcript.{session}",
            session_id_derived=True,
            session_line=seq,
            user=user,
            database=db,
            line=first + 1,
            line_end=i + 1,
        )
        i += 1


# --------------------------------------------------------------------------------------------
# format detection and file reading


def parse(
    source: str | Iterable[str],
    *,
    format: str = "auto",
    prefix: str | None = None,
    stats: Counter[str] | None = None,
    tz_abbrevs: dict[str, int] | None = None,
    sessions: dict[int, str] | None = None,
) -> Iterator[LogRecord]:
    """Records of a log in ``format`` (``csvlog``, ``jsonlog``, ``stderr``, ``cloudsql``,
    ``pgaudit-transcript`` or ``auto``: guessed from the first non-blank line).

    ``sessions`` (stderr, Cloud SQL): the derived sessions open before ``source`` (pid -> session
    id), updated as records are read, so a log read in parts derives the same session ids."""
    lines: Iterable[str] = _lines(source)
    if format == "auto":
        head, lines = _peek(lines, 2000)
        format = detect_format(head)
    if format == "csvlog":
        return parse_csvlog(lines, stats=stats, tz_abbrevs=tz_abbrevs)
    if format in ("jsonlog", "cnpg"):
        return parse_jsonlog(lines, stats=stats, tz_abbrevs=tz_abbrevs)
    if format == "cloudsql":
        return parse_cloudsql(lines, stats=stats, tz_abbrevs=tz_abbrevs, sessions=sessions)
    if format == "stderr":
        return parse_stderr(lines, prefix=prefix, stats=stats, tz_abbrevs=tz_abbrevs, sessions=sessions)
    if format == "pgaudit-transcript":
        return parse_pgaudit_transcript(lines, stats=stats)
    raise ValueError(f"unknown PostgreSQL log format {format!r}")


_CSV_START = re.compile(r'^"?\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?(?: [A-Za-z+\-0-9:]+)?"?,')
_TRANSCRIPT_LINE = re.compile(r"^[A-Z]+:\s+AUDIT: (?:SESSION|OBJECT),")  # psql's NOTICE:  AUDIT: ...
_LOG_PREFIXED = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d")  # a server log line starts with its time


def detect_format(head: Sequence[str]) -> str:
    """The format of a log from its first lines (up to 2,000 of them): ``pgaudit-transcript``
    when ``AUDIT:`` lines come with no timestamped server-log line (a psql transcript such as
    pgaudit's regression output has its first one after the test's setup), else the format of
    the first non-blank line (csvlog, jsonlog, cloudsql or stderr)."""
    if any(_TRANSCRIPT_LINE.match(line) for line in head) and not any(_LOG_PREFIXED.match(line) for line in head):
        return "pgaudit-transcript"
    return _guess_format(list(head[:50]))


def _guess_format(lines: list[str]) -> str:
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            return "cloudsql" if '"textPayload"' in text else "jsonlog"
        if _CSV_START.match(text):
            return "csvlog"
        return "stderr"
    return "stderr"


def fetch_records(
    path: str | Path, *, format: str = "auto", prefix: str | None = None, stats: Counter[str] | None = None
) -> Iterator[LogRecord]:
    """I/O helper: the records of a log file (UTF-8; undecodable bytes replaced), with their
    parallel workers linked and their sessions' authentication attached."""
    leaders = ParallelLeaders()
    auths = SessionAuthentications()
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for record in parse(fh, format=format, prefix=prefix, stats=stats):
            linked = leaders.apply(record, stats)
            if linked is not None:
                yield auths.apply(linked)


# --------------------------------------------------------------------------------------------
# parallel workers (stateful: a worker's records need its leader's)

_PARALLEL_WORKER = "parallel worker"
_MAX_LEADERS = 5000  # leaders kept in memory (oldest activity dropped first)
_CURSOR_LEADERS = 64  # the most recently active of them, kept in fetch_log's cursor
_LEADER_AUDIT_KEYS = 32  # pgaudit lines of a leader's recent statements remembered


def _is_parallel_worker(record: LogRecord) -> bool:
    if record.backend_type is not None:
        return record.backend_type.lower() == _PARALLEL_WORKER
    # stderr with %P but no %b: only a parallel worker writes a leader pid other than its own
    return bool(record.leader_pid) and record.leader_pid != record.pid


def _audit_key(message: str) -> str | None:
    """A pgaudit line without its statement and substatement ids (a worker numbers its own) and
    row count, hashed; None when the message is not a well-formed pgaudit line."""
    if not message.startswith("AUDIT: "):
        return None
    try:
        cols = _parse_audit(message)
    except (DecodeError, csv.Error):
        return None
    return keyed.current().hex(_csv_line([cols[0], *cols[3:9]]))[:16]


class ParallelLeaders:
    """Leader pid -> (session id, user, database, pgaudit lines of its recent statements), learnt
    from the records of client backends, applied to the records of their parallel workers (see
    "Parallel workers" in the module docstring).

    ``state`` is a :meth:`snapshot` (JSON-able: it travels in :func:`fetch_log`'s cursor)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self._leaders: dict[int, list[Any]] = {}  # pid -> [session_id, user, database, [keys]]
        for pid, entry in (state or {}).items():
            try:
                sid, user, database, keys = entry
                self._leaders[int(pid)] = [str(sid), user, database, [str(k) for k in keys]]
            except (TypeError, ValueError):
                continue  # a cursor of another version: the state is only a help
        self._snap: dict[str, list[Any]] | None = None

    def snapshot(self) -> dict[str, list[Any]]:
        """The most recently active leaders, JSON-able (the same object until the state changes)."""
        if self._snap is None:
            recent = list(self._leaders.items())[-_CURSOR_LEADERS:]
            self._snap = {str(pid): [e[0], e[1], e[2], list(e[3])] for pid, e in recent}
        return self._snap

    def _learn(self, record: LogRecord) -> None:
        pid, sid = record.pid, record.session_id
        if pid is None or not sid:
            return
        entry = self._leaders.get(pid)
        changed = False
        if entry is None or entry[0] != sid:  # a new session (pids are reused)
            entry = [sid, None, None, []]
            changed = True
        if record.user and entry[1] != record.user:
            entry[1], changed = record.user, True
        if record.database and entry[2] != record.database:
            entry[2], changed = record.database, True
        key = _audit_key(record.message)
        if key is not None and key not in entry[3]:
            entry[3] = [*entry[3][-(_LEADER_AUDIT_KEYS - 1) :], key]
            changed = True
        if changed:
            self._leaders.pop(pid, None)
            self._leaders[pid] = entry  # most recently active last
            if len(self._leaders) > _MAX_LEADERS:
                del self._leaders[next(iter(self._leaders))]
            self._snap = None

    def apply(self, record: LogRecord, stats: Counter[str] | None = None) -> LogRecord | None:
        """``record``, with its leader's session, user and database if it is a parallel
        worker's; None (counted) for a worker's pgaudit line, which repeats its leader's."""
        if not _is_parallel_worker(record):
            self._learn(record)
            return record
        leader = self._leaders.get(record.leader_pid) if record.leader_pid is not None else None
        key = _audit_key(record.message)
        if key is not None:
            seen = leader is not None and key in leader[3]
            _count(stats, "parallel_worker_repeats" if seen else "parallel_worker_repeats_unverified")
            return None
        if leader is None:
            return record
        inherited = [
            name
            for name, own, theirs in (
                ("user", record.user, leader[1]),
                ("database", record.database, leader[2]),
            )
            if own is None and theirs is not None
        ]
        return replace(
            record,
            user=record.user or leader[1],
            database=record.database or leader[2],
            leader_session_id=leader[0],
            inherited=(*inherited, "session_id"),
        )


# --------------------------------------------------------------------------------------------
# authentication (stateful: a session's records need its ``connection authenticated`` line)

#: ``connection authenticated: identity="alice" method=scram-sha-256 (/etc/.../pg_hba.conf:5)``
#: (PostgreSQL 14+ with log_connections); PostgreSQL 18 also logs trust connections, with
#: ``user="..." method=trust``.
_AUTHENTICATED = re.compile(
    r'^connection authenticated: (?:identity|user)="(?P<identity>.*?)" method=(?P<method>[\w-]+)(?= \(|$)'
)
#: pg_hba methods that check nothing the client could not make up: ``trust`` accepts any role
#: name, ``ident`` (RFC 1413) believes the client host's ident server. Every other method
#: PostgreSQL reports as authenticated checked a credential (password, SCRAM, certificate,
#: Kerberos, LDAP, RADIUS, PAM, OAuth) or asked the kernel (``peer``).
UNVERIFIED_METHODS = frozenset({"trust", "ident"})
_MAX_AUTH_SESSIONS = 20_000  # sessions remembered in memory (oldest dropped first)
_CURSOR_AUTH_SESSIONS = 1_000  # the most recently authenticated of them, kept in fetch_log's cursor


class SessionAuthentications:
    """Session id -> (method, identity) from ``connection authenticated`` lines, attached to every
    later record of that session (a parallel worker's: its leader's session) until its
    ``disconnection``.

    ``state`` is a :meth:`snapshot` (JSON-able: it travels in :func:`fetch_log`'s cursor)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self._sessions: dict[str, tuple[str, str]] = {}
        for sid, entry in (state or {}).items():
            if isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry):
                self._sessions[str(sid)] = (entry[0], entry[1])
        self._snap: dict[str, list[str]] | None = None

    def snapshot(self) -> dict[str, list[str]]:
        """The most recently authenticated open sessions, JSON-able (the same object until the
        state changes)."""
        if self._snap is None:
            recent = list(self._sessions.items())[-_CURSOR_AUTH_SESSIONS:]
            self._snap = {sid: [method, identity] for sid, (method, identity) in recent}
        return self._snap

    def apply(self, record: LogRecord) -> LogRecord:
        """``record`` with its session's authentication, if the session's line was seen."""
        session = record.leader_session_id or record.session_id
        if not session:
            return record
        if m := _AUTHENTICATED.match(record.message):
            self._sessions.pop(session, None)
            self._sessions[session] = (m.group("method").lower(), m.group("identity"))
            if len(self._sessions) > _MAX_AUTH_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._snap = None
        found = self._sessions.get(session)
        if record.message.startswith("disconnection:") and session == record.session_id and found:
            del self._sessions[session]
            self._snap = None
        if found is None:
            return record
        return replace(record, auth_method=found[0], auth_identity=found[1])


# --------------------------------------------------------------------------------------------
# following a log file or a log directory (I/O)

#: ``--glob`` defaults for a log directory, by format (``auto``: csvlog's files).
DEFAULT_GLOBS = {
    "auto": "*.csv",
    "csvlog": "*.csv",
    "jsonlog": "*.json",
    "cnpg": "*.json",
    "cloudsql": "*.json",
}
_SESSION_CHANGES = ("connection ", "replication connection ", "disconnection:")
_MAX_SESSIONS = 5000  # derived sessions kept in the cursor (log_disconnections off: never closed)
_HEAD = 512  # bytes of a file's start fingerprinted in the cursor (a reused name with new content)


def log_files(path: str | Path, *, format: str = "auto", glob: str | None = None) -> list[Path]:
    """``path`` itself, or a log directory's files matching ``glob`` (default by format, see
    :data:`DEFAULT_GLOBS`; ``*.log`` for stderr) in rotation order: modification time, then name."""
    path = Path(path).resolve()
    if not path.is_dir():
        return [path]
    pattern = glob or DEFAULT_GLOBS.get(format, "*.log")
    found = []
    for f in path.glob(pattern):
        try:
            st = f.stat()
        except FileNotFoundError:  # removed while listing
            continue
        if f.is_file():
            found.append((st.st_mtime_ns, f.name, f))
    return [f for _, _, f in sorted(found)]


def _fingerprint(head: bytes, end: int) -> str:
    # Plain, not keyed: it only recognises a file again (it is never stored with the events), and
    # a keyed one would make every followed file look replaced after a key rotation.
    return hashlib.sha256(head[: min(end, _HEAD)]).hexdigest()[:16]


def _states(path: Path, cursor: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per file ``{inode, offset, line, head}`` from a cursor of :func:`fetch_log` (or, for a
    single file, the older ``{inode, line}`` cursor: skip records up to that line once)."""
    if not cursor:
        return {}
    states = dict(cursor.get("files") or {})
    if "path" in cursor and "offset" in cursor:
        states[cursor["path"]] = {k: cursor.get(k) for k in ("inode", "offset", "line", "head")}
    elif "line" in cursor and "inode" in cursor and not path.is_dir():
        states[str(path)] = {
            "inode": cursor["inode"],
            "offset": 0,
            "line": 0,
            "skip_lines": int(cursor["line"]),
        }
    return states


def fetch_log(
    path: str | Path,
    cursor: dict[str, Any] | None = None,
    *,
    format: str = "auto",
    prefix: str | None = None,
    glob: str | None = None,
    final: bool = True,
    stats: Counter[str] | None = None,
    tz_abbrevs: dict[str, int] | None = None,
    chunk_bytes: int = 8 << 20,
) -> Iterator[tuple[LogRecord, dict[str, Any]]]:
    """I/O: the new complete records of a log file or log directory, each with the cursor to
    resume *after* it.

    Files (see :func:`log_files`) are read in rotation order, each from the byte offset its
    cursor entry saved (``{path: {inode, offset, line, head}}``; ``head`` fingerprints the first
    bytes). A file whose inode or first bytes changed, or that is shorter than the saved offset,
    was replaced or truncated (``log_truncate_on_rotation``) and is read from the start. Records
    keep their position in the whole file (``line``, ``line_end``, ``offset``) however the file
    was resumed. Only complete records are handed over: a last line without its ``\n`` is
    left for the next call, as is a csvlog row whose quoted field is still open at the end of
    the data (a row torn inside a multi-line statement would otherwise parse as a row of fewer
    columns). A stderr/Cloud SQL record may still get continuation lines, so the last record of
    the newest file is held back unless ``final`` (``--once``); records of older files are
    complete. ``format="auto"`` and a stderr log without ``prefix`` are decided from each
    file's first lines, not from where the read resumed. Session ids that stderr and Cloud SQL
    logs *derive* from connection lines (no ``%c``) carry over reads, files and runs: the
    sessions still open are in the cursor (``sessions``: pid -> session id). A single log
    file is followed by its name: what was written to it after the last read and before it was
    renamed away (logrotate) is not seen; follow the directory instead.
    """
    root = Path(path).resolve()
    files = log_files(root, format=format, glob=glob)
    states = _states(root, cursor)
    listed = {str(f) for f in files}
    states = {p: st for p, st in states.items() if p in listed}
    snap: dict[str, str] | None = None
    sessions: dict[int, str] | None = None
    if format in ("auto", "stderr", "cloudsql"):
        snap = {str(k): str(v) for k, v in dict((cursor or {}).get("sessions") or {}).items()}
        sessions = {int(k): v for k, v in snap.items()}
    leaders = ParallelLeaders(dict((cursor or {}).get("leaders") or {}))
    auths = SessionAuthentications(dict((cursor or {}).get("auth") or {}))
    for index, f in enumerate(files):
        key = str(f)
        try:
            fh = open(f, "rb")  # noqa: SIM115 -- closed below
        except FileNotFoundError:
            continue
        with fh:
            st = os.fstat(fh.fileno())
            head = os.pread(fh.fileno(), _HEAD, 0)  # a file with nothing new costs one small read
            state = states.get(key)
            start, base_line, skip_lines = 0, 0, 0
            if state and state.get("inode") == st.st_ino:
                if "skip_lines" in state:
                    skip_lines = int(state["skip_lines"])
                elif int(state["offset"]) <= st.st_size and state.get("head") == _fingerprint(
                    head, int(state["offset"])
                ):
                    start, base_line = int(state["offset"]), int(state.get("line") or 0)
            if start >= st.st_size:
                continue
            fmt, pre = format, prefix
            head_lines: list[str] = []
            if fmt == "auto" or (fmt == "stderr" and pre is None):
                sample = os.pread(fh.fileno(), 256 * 1024, 0)
                head_lines = sample.decode("utf-8", "replace").splitlines(keepends=True)
            if fmt == "auto":
                fmt = detect_format(head_lines[:2000])
            if fmt == "stderr" and pre is None:
                pre = _detect_prefix(head_lines[:200])
            chunk = chunk_bytes
            if fmt == "pgaudit-transcript" and start:
                # A transcript's sessions, users and times come from the lines before a record:
                # read it again from the top (in one block) and skip what was sent.
                start, base_line, skip_lines = 0, 0, base_line
            if fmt == "pgaudit-transcript":
                chunk = max(chunk_bytes, st.st_size + 1)
            complete_last = final or index < len(files) - 1
            others = {p: s for p, s in states.items() if p != key}
            last: dict[str, Any] | None = None
            derives = fmt in ("stderr", "cloudsql")
            for record, end, line_end, after_snap in _read_records(
                fh,
                start,
                base_line,
                fmt,
                pre,
                complete_last,
                stats,
                tz_abbrevs,
                chunk,
                sessions if derives else None,
                snap if derives else None,
            ):
                last = {
                    "files": others,
                    "path": key,
                    "inode": st.st_ino,
                    "offset": end,
                    "line": line_end,
                    "head": _fingerprint(head, end),
                }
                if after_snap is not None:
                    snap = last["sessions"] = after_snap
                skipped = bool(skip_lines) and (record.line_end or 0) <= skip_lines
                linked = leaders.apply(record, None if skipped else stats)
                if linked is not None:
                    linked = auths.apply(linked)  # skipped records too: they may open a session
                if leaders.snapshot():
                    last["leaders"] = leaders.snapshot()
                if auths.snapshot():
                    last["auth"] = auths.snapshot()
                if skipped or linked is None:
                    continue
                yield linked, last
            if last is not None:
                states = {**others, key: {k: last[k] for k in ("inode", "offset", "line", "head")}}


def _read_records(
    fh: Any,
    start: int,
    base_line: int,
    fmt: str,
    prefix: str | None,
    complete_last: bool,
    stats: Counter[str] | None,
    tz_abbrevs: dict[str, int] | None,
    chunk_bytes: int,
    sessions: dict[int, str] | None,
    snap: dict[str, str] | None,
) -> Iterator[tuple[LogRecord, int, int, dict[str, str] | None]]:
    """(record with whole-file positions, byte offset after it, its last line, the derived
    sessions open after it) from ``start``; ``sessions`` is updated, ``snap`` is its JSON form."""
    fh.seek(start)
    base, buf = start, b""
    while True:
        block = fh.read(chunk_bytes)
        buf += block
        at_eof = len(block) < chunk_bytes
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            if at_eof:
                return
            continue
        raw_lines = buf[:cut].split(b"\n")[:-1]
        starts = [0]
        for raw in raw_lines:
            starts.append(starts[-1] + len(raw) + 1)
        text = [raw.decode("utf-8", "replace") + "\n" for raw in raw_lines]
        records, snaps, chunk_snap = [], [], snap
        for record in parse(
            text, format=fmt, prefix=prefix, stats=stats, tz_abbrevs=tz_abbrevs, sessions=sessions
        ):
            if sessions is not None and record.message.startswith(_SESSION_CHANGES):
                snap = {str(pid): sid for pid, sid in list(sessions.items())[-_MAX_SESSIONS:]}
            records.append(record)
            snaps.append(snap)
        keep = len(records)
        if records and not at_eof:
            keep -= 1  # may continue in the next block
        elif records:
            r = records[-1]
            body = buf[starts[(r.line or 1) - 1] : starts[r.line_end or r.line or 1]]
            if fmt == "csvlog" and body.count(b'"') % 2:
                keep -= 1  # a quoted field still open: the row is not complete yet
            elif fmt not in ("csvlog", "jsonlog", "cnpg") and not complete_last:
                keep -= 1
        if keep < len(records) and sessions is not None:  # the held record is read again
            snap = snaps[keep - 1] if keep else chunk_snap
            sessions.clear()
            sessions.update({int(pid): sid for pid, sid in (snap or {}).items()})
        consumed, consumed_lines = 0, 0
        for r, after in zip(records[:keep], snaps, strict=False):
            first, last_line = r.line or 1, r.line_end or r.line or 1
            consumed, consumed_lines = starts[last_line], last_line
            yield (
                replace(
                    r, line=first + base_line, line_end=last_line + base_line, offset=base + starts[first - 1]
                ),
                base + consumed,
                base_line + last_line,
                after,
            )
        if at_eof:
            return
        buf = buf[consumed:]
        base += consumed
        base_line += consumed_lines


# --------------------------------------------------------------------------------------------
# mapping

_STATEMENT = re.compile(
    r"^(?:duration: (?P<duration>[\d.]+) ms\s+)?"
    r"(?P<kind>statement|execute|parse|bind|execute fetch from)(?: (?P<name>[^:\n]*?))?: (?P<sql>.*)$",
    re.S,
)
_AUTHORIZED = re.compile(r"^(?P<replication>replication )?connection authorized: (?P<rest>.*)$", re.S)
_DISCONNECTION = re.compile(r"^disconnection: session time: (?P<duration>\S+)(?P<rest>.*)$", re.S)
_KV = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")
_AUTH_FAILED = re.compile(
    r'(?:password|peer|ident|ldap|radius|cert|certificate|gss|sspi|pam|bsd|scram\S*|md5) authentication failed for user "(?P<user>[^"]*)"'
    r'|no pg_hba\.conf entry for (?:replication connection from )?host "[^"]*", user "(?P<user2>[^"]*)"',
    re.I,
)
_PLACEHOLDERS = frozenset({"<not logged>", "<previously logged>", "<none>", ""})


def _class_type(audit_class: str, command: str) -> str:
    cls = audit_class.upper()
    if cls == "ROLE":
        return f"access.db.{slug(command or 'role')}"
    return {"DDL": "db.ddl", "WRITE": "db.write", "READ": "db.query", "FUNCTION": "db.function"}.get(
        cls, "db.misc"
    )


def _hash(text: str | None) -> str | None:
    return keyed.current().tag(text) if text else None


def _statement_info(st: pgsql.Statement) -> dict[str, Any]:
    info: dict[str, Any] = {
        "normalized": st.normalized,
        "hash": st.hash,
        "command": st.command,
        "class": st.statement_class,
    }
    if st.password_scrubbed:
        info["password_scrubbed"] = True
    if st.truncated:
        info["truncated"] = True
    if st.comment_keys:
        info["comment_keys"] = list(st.comment_keys)
    return info


def _target(server: str, database: str | None, kind: str | None, name: str | None) -> dict[str, Any]:
    if kind and name:
        kind = kind.lower()
        if kind == "role":
            return {"kind": "db.role", "id": f"{server}/{name}", "name": name, "service": server}
        where = f"{server}/{database}" if database else server
        return {"kind": f"db.{slug(kind)}", "id": f"{where}/{name}", "name": name, "service": server}
    if database:
        return {"kind": "db.database", "id": f"{server}/{database}", "name": database, "service": server}
    return {"kind": "db.server", "id": server, "name": server, "service": server}


def _actor(server: str, user: str | None, record: LogRecord, *, failed: bool = False) -> dict[str, Any]:
    """The role as actor: ``authenticated`` only when the server checked a credential for the
    session (see "Actor" in the module docstring), else ``claimed``."""
    if not user:
        return {"id": f"postgres:{server}:unknown", "kind": "unknown", "assurance": "none", "verified": False}
    checked = not failed and record.auth_method is not None and record.auth_method not in UNVERIFIED_METHODS
    return {
        "id": f"postgres:{server}:{user}",
        "display": user,
        "kind": "unknown",
        "principal": user,
        "verified": checked,
        "assurance": "authenticated" if checked else "claimed",
    }


def _raw(record: LogRecord, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "format": record.format,
        "log_time": record.time_text,
        "severity": record.severity or None,
        "message": message,
        "pid": record.pid,
        "session_id": record.session_id,
        "session_id_derived": record.session_id_derived or None,
        "session_line": record.session_line,
        "user": record.user,
        "database": record.database,
        "application_name": record.application_name,
        "client": record.client,
        "command_tag": record.command_tag,
        "virtual_xid": record.virtual_xid,
        "xid": record.xid,
        "sql_state": record.sql_state,
        "backend_type": record.backend_type,
        "leader_pid": record.leader_pid if _is_parallel_worker(record) else None,
        "leader_session_id": record.leader_session_id,
        "inherited_from_leader": list(record.inherited) or None,
        "auth_method": record.auth_method,
        "auth_identity": record.auth_identity,
        "query_id": record.query_id,
        "hint": pgsql.scrub_message(record.hint) if record.hint else None,
        "detail_hash": _hash(record.detail),
        "context_hash": _hash(record.context),
        "internal_query_hash": _hash(record.internal_query),
        "line": record.line,
        "line_end": record.line_end,
        "offset": record.offset,
        **(record.extra or {}),
    }
    out = redact({k: v for k, v in fields.items() if v is not None and k != "message"})
    # the message is built by the caller from normalised statements or fixed server texts; a
    # normalised statement has no values left to redact (``password = ?`` must stay readable)
    out["message"] = message
    if extra:
        out.update(extra)
    return out


def _session_extra(record: LogRecord, kv: dict[str, str], *, replication: bool) -> dict[str, Any] | None:
    """What ``connection authorized`` says beyond the prefix (application_name, replication)."""
    extra: dict[str, Any] = {}
    if record.application_name is None and kv.get("application_name"):
        extra["application_name"] = redact(kv["application_name"], key="application_name")
    if replication:
        extra["replication"] = True
    return extra or None


def _session_of(record: LogRecord) -> str | None:
    """The client session a record belongs to: a parallel worker's is its leader's (when known;
    the worker's own ``session_id`` is no client session and is not linked)."""
    if record.leader_session_id:
        return record.leader_session_id
    return None if _is_parallel_worker(record) else record.session_id


def _links(server: str, record: LogRecord, trace_id: str | None = None) -> list[str | None]:
    session = _session_of(record)
    return [
        f"session:postgres:{server}:{session}" if session else None,
        f"trace:{trace_id}" if trace_id else None,
        f"request:pgtx:{server}:{record.xid}" if record.xid else None,
    ]


def _identity(server: str, record: LogRecord) -> str:
    if record.session_id and record.session_line is not None and not record.session_id_derived:
        return event_id(
            "postgres", server, record.session_id, record.session_line, _hash(record.message) or ""
        )
    return event_id(
        "postgres",
        server,
        record.format,
        record.pid if record.pid is not None else "",
        record.session_line if record.session_line is not None else "",
        record.time_text or "",
        record.offset if record.offset is not None else (record.line or ""),
        _hash(record.message) or "",
    )


def _csv_line(cols: list[str]) -> str:
    """One CSV line, quoted the way pgaudit quotes (only fields that need it)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cols)
    return buffer.getvalue()


def _parse_audit(message: str) -> list[str]:
    body = message[len("AUDIT: ") :]
    rows = list(csv.reader(body.splitlines(keepends=True) if "\n" in body else [body]))
    if len(rows) != 1 or len(rows[0]) < 9:
        raise fail("invalid_value", "not a pgaudit line (AUDIT: type,id,subid,class,command,objtype,objname,statement,parameter)", "$.message", message[:80])  # fmt: skip
    return rows[0]


def to_events(
    record: LogRecord, *, scope: str, server: str, stats: Counter[str] | None = None
) -> list[Event]:
    """The change event of one log record, or none (see the module docstring)."""
    if not isinstance(record, LogRecord):
        raise fail("wrong_type", f"expected a LogRecord, got {type(record).__name__}", "$")
    if not server or any(c.isspace() for c in server):
        raise fail("invalid_value", "server must be a non-empty name without whitespace", "server", server)
    message = record.message
    severity = record.severity.upper()
    failed = severity in ("ERROR", "FATAL", "PANIC")
    fields: dict[str, Any]

    if message.startswith("AUDIT: ") and _is_parallel_worker(record):
        # repeats the line its leader logged (see "Parallel workers"); fetch_log drops these
        _count(stats, "parallel_worker_repeats")
        return []
    if message.startswith("AUDIT: "):
        fields = _audit_fields(record, server)
    elif (m := _STATEMENT.match(message)) and not failed:
        if m.group("kind") in ("parse", "bind"):
            _count(stats, "extended_protocol_phase")
            return []
        fields = _statement_fields(record, server, m.group("sql"), m)
    elif failed and record.query:
        fields = _statement_fields(record, server, record.query, None)
    elif _AUTHENTICATED.match(message):
        # folded into the session's events (their actor's assurance, raw.auth_method)
        _count(stats, "authentication")
        return []
    elif m := _AUTHORIZED.match(message):
        kv = dict(_KV.findall(m.group("rest")))
        user = record.user or kv.get("user")
        database = record.database or kv.get("database")
        fields = {
            "type": "db.session.started",
            "action": "connect",
            "actor": _actor(server, user, record),
            "target": _target(server, database, None, None),
            "outcome": "success",
            "links": _links(server, record),
            "raw": _raw(
                record, message, _session_extra(record, kv, replication=bool(m.group("replication")))
            ),
        }
    elif m := _DISCONNECTION.match(message):
        kv = dict(_KV.findall(m.group("rest")))
        fields = {
            "type": "db.session.ended",
            "action": "disconnect",
            "actor": _actor(server, record.user or kv.get("user"), record),
            "target": _target(server, record.database or kv.get("database"), None, None),
            "outcome": "success",
            "links": _links(server, record),
            "raw": _raw(record, message, {"session_duration": m.group("duration")}),
        }
    elif failed and (m := _AUTH_FAILED.search(message)):
        user = m.group("user") if m.group("user") is not None else m.group("user2")
        fields = {
            "type": "db.session.started",
            "action": "connect",
            "actor": _actor(server, user or record.user, record, failed=True),
            "target": _target(server, record.database, None, None),
            "outcome": "failure",
            "links": _links(server, record),
            "raw": _raw(record, pgsql.scrub_message(message)),
        }
    else:
        _count(stats, "unmapped")
        return []

    if record.time is None:
        raise fail(
            "invalid_value",
            "the record's time is missing or its zone abbreviation is unknown (pass tz_abbrevs to the parser)",
            "$.time",
            record.time_text,
        )
    envelope = {
        "id": _identity(server, record),
        "source": f"postgres://{server}",
        "time": record.time,
        "scope": scope,
        **fields,
    }
    seq = record.offset if record.offset is not None else record.line
    if seq is not None:
        envelope["source_seq"] = seq
    _count(stats, "events")
    return [build(envelope)]


def _statement_fields(record: LogRecord, server: str, sql: str, m: re.Match[str] | None) -> dict[str, Any]:
    st = pgsql.analyze(sql)
    info = _statement_info(st)
    if m is not None:
        head = record.message[: m.start("sql")]
        shown = head + st.normalized
        if m.group("duration"):
            info["duration_ms"] = float(m.group("duration"))
        if m.group("name"):
            info["prepared_name"] = m.group("name")
        outcome = "success" if m.group("duration") else "unknown"
    else:
        shown = pgsql.scrub_message(record.message)
        outcome = "failure"
    command = st.command
    type_ = _class_type(st.statement_class, command)
    target, subject = _statement_target(server, record.database, st)
    fields: dict[str, Any] = {
        "type": type_,
        "action": command.lower() if command else "statement",
        "actor": _actor(server, record.user, record),
        "target": target,
        "outcome": outcome,
        "links": _links(server, record, st.trace_id),
        "raw": {**_raw(record, shown), "statement": info},
    }
    if subject:
        fields["subject"] = subject
    return fields


def _statement_target(
    server: str, database: str | None, st: pgsql.Statement
) -> tuple[dict[str, Any], str | None]:
    target = _target(server, database, st.object_kind, st.object_name)
    subject = None
    if st.command in ("GRANT", "REVOKE") and st.grantees:
        subject = ("to " if st.command == "GRANT" else "from ") + ", ".join(st.grantees)
    return target, subject


def _sub_statement(st: pgsql.Statement, command: str) -> pgsql.Statement | None:
    """The statement a pgaudit line is about, when its text holds several (``a; b; c``).

    pgaudit repeats the whole query string on the line of each sub-statement; the line's own
    command picks the sub-statement. The normalised text has no literals or comments left, so
    splitting it at ``;`` is safe. None when several sub-statements share that command.
    """
    if ";" not in st.normalized:
        return st
    parts = [pgsql.analyze(p) for p in st.normalized.split(";") if p.strip()]
    if len(parts) == 1:
        return st
    matching = [p for p in parts if p.command.upper() == command.upper()]
    if len(matching) == 1:
        return matching[0]
    return None if matching else st


def _audit_fields(record: LogRecord, server: str) -> dict[str, Any]:
    cols = _parse_audit(record.message)
    audit_type, stmt_id, substmt_id, audit_class, command, object_type, object_name, statement, parameter = (
        cols[:9]
    )
    st = pgsql.analyze(statement) if statement not in _PLACEHOLDERS else None
    audit: dict[str, Any] = {
        "audit_type": audit_type,
        "statement_id": stmt_id,
        "substatement_id": substmt_id,
        "class": audit_class,
        "command": command,
        "object_type": object_type or None,
        "object_name": object_name or None,
        "statement": statement if st is None else None,
        "parameter": parameter if parameter in _PLACEHOLDERS else "<redacted>",
    }
    if len(cols) > 9:
        audit["rows"] = cols[9]
    audit = {k: v for k, v in audit.items() if v is not None}
    extra: dict[str, Any] = {"audit": audit}
    if st is not None:
        extra["statement"] = _statement_info(st)
    shown_cols = [*cols[:7], st.normalized if st is not None else statement, audit["parameter"]]
    shown = "AUDIT: " + _csv_line(shown_cols)
    if object_name:
        target = _target(server, record.database, object_type or "object", object_name)
        subject = None
        if st is not None and st.command in ("GRANT", "REVOKE") and st.grantees:
            subject = ("to " if st.command == "GRANT" else "from ") + ", ".join(st.grantees)
    elif st is not None:
        sub = _sub_statement(st, command)
        if sub is None:
            # Several sub-statements with this command: the line does not say which one it is.
            audit["ambiguous"] = True
            target, subject = _target(server, record.database, None, None), None
        else:
            target, subject = _statement_target(server, record.database, sub)
    else:
        target, subject = _target(server, record.database, None, None), None
    fields: dict[str, Any] = {
        "type": _class_type(audit_class, command),
        "action": command.lower() or "statement",
        "actor": _actor(server, record.user, record),
        "target": target,
        "outcome": "failure" if record.severity.upper() in ("ERROR", "FATAL") else "unknown",
        "links": _links(server, record, st.trace_id if st is not None else None),
        "raw": {**_raw(record, shown), **extra},
    }
    if subject:
        fields["subject"] = subject
    return fields
