"""HTTP receivers for push sources (GitHub webhooks, Kubernetes audit webhooks).

The generic part lives here; a receiver kind only supplies :class:`Kind`: an optional
``authorize`` check on the raw request (GitHub's ``X-Hub-Signature-256``), ``split`` (raw body
-> :class:`~pipeline.sources.runner.RawRecord` list, or a DecodeError for a malformed body) and
``convert`` (one record -> envelopes, pure).

Per request, in this order:

1. ``GET /health`` -> 200. Anything but POST -> 405. No ``Content-Length`` -> 411; a body above
   ``max_body`` (:data:`MAX_BODY_BYTES`) -> 413 (not read); too many requests in flight -> 503.
2. ``authorize`` before anything is parsed or produced: refused -> 401, nothing produced.
   A ``Content-Type`` the kind does not take -> 415; a body nested deeper than
   :data:`MAX_BODY_DEPTH` -> 400 ``too_deep``. Both are counted (``invalid``) and produce nothing.
3. ``split`` + ``convert`` outside the sink lock (pure work runs in parallel).
4. Under the lock (one transactional producer per receiver), everything the request yields
   goes through :func:`~pipeline.sources.runner.run_source` as **one** Kafka transaction:
   events to the changes topic, rejected records to the DLQ with their reason headers, and a
   cursor. Only once Kafka acknowledged the commit does the sender get its 2xx (durable before
   ack). A Kafka failure -> 503 with ``Retry-After`` (senders retry; deterministic event ids
   make a retried delivery harmless downstream), the open transaction is aborted and the sink is
   rebuilt on the next request.
5. Status: 200 when the request produced events or nothing at all; 400 (JSON error) when
   everything it held was rejected to the DLQ (a malformed body, a payload of the wrong shape).
   A batch with some bad items (Kubernetes) stores the good ones, dead-letters the others and
   answers 200 with ``"rejected": n``: retrying would not make the bad items better.
   500 only for a fault of the receiver itself (a bug), logged with the request id, which the
   answer carries too; nothing is produced.

This module imports no Kafka client: the sink is injected (a factory, so a failed transactional
producer can be replaced).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from pipeline.errors import ConfigError, DecodeError
from pipeline.metrics import CONTENT_TYPE, Latency, exposition, receiver_registry
from pipeline.model import Event, encode
from pipeline.model.codec import MAX_DEPTH, check_depth
from pipeline.sources.runner import RawRecord, Report, Sink, run_source

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_BODY_DEPTH",
    "Kind",
    "Receiver",
    "Response",
    "parse_listen",
    "serve",
    "verify_github_signature",
]

log = logging.getLogger("causelog.receiver")

MAX_BODY_BYTES = 25 * 1024 * 1024
"""GitHub caps webhook payloads at 25 MB; Kubernetes audit batches stay far below."""

MAX_BODY_DEPTH = MAX_DEPTH + 1
"""Deepest nesting of objects/arrays a request body may have: a Kubernetes batch holds its audit
events two levels down, and an event's ``raw`` may nest 64 levels (pipeline.model.codec)."""

JSON_TYPES = ("application/json",)

# Records (events, DLQ values) must fit a Kafka message: 4 MiB topics, minus room for headers.
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024 - 64 * 1024

_SHA256_HEADER = re.compile(r"sha256=([0-9a-fA-F]{64})")


def verify_github_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is ``sha256=<hex HMAC-SHA256 of body with secret>`` (constant time).

    A missing header, another algorithm (``sha1=``), no prefix, non-hex or a wrong length are all
    False; so is an empty secret (a receiver without a secret must accept nothing).
    """
    if not secret or header is None:
        return False
    m = _SHA256_HEADER.fullmatch(header.strip())
    if m is None:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    return hmac.compare_digest(expected, bytes.fromhex(m.group(1)))


@dataclass(frozen=True)
class Request:
    """What a receiver kind sees of one HTTP request (header names lower-cased)."""

    body: bytes
    headers: Mapping[str, str]
    request_id: str
    received_at: datetime

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Kind:
    """One receiver kind: how to authorize, split and convert a request."""

    name: str
    split: Callable[[Request], list[RawRecord]]
    convert: Callable[[RawRecord], list[Event]]
    authorize: Callable[[Request], bool] | None = None
    describe: Callable[[Request], str] = lambda req: ""  # for the log line (event, delivery...)
    origin: Callable[[Request], str] = lambda req: f"http:{req.request_id}"  # DLQ origin of a bad body
    # Checks of the request as a whole before anything is parsed or produced (credentials, media
    # type): a Response refuses it (4xx, nothing produced, not even to the DLQ), None admits it.
    admit: Callable[[Request], Response | None] | None = None
    # A request with another Content-Type gets 415; () when ``admit`` judges media types itself.
    content_types: tuple[str, ...] = JSON_TYPES


@dataclass
class Response:
    """Status, JSON body and extra headers of an answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""  # for the log line
    label: str = ""  # what the request was (describe), for the log line

    def encoded(self) -> bytes:
        return orjson.dumps(self.body) + b"\n"


@dataclass
class Totals:
    requests: int = 0
    events: int = 0
    rejected: int = 0
    refused: int = 0
    failed: int = 0
    invalid: int = 0  # 4xx for the body itself: wrong content type, too deep, too large


class Receiver:
    """Routes requests of one kind to convert + sink + DLQ; thread-safe (one sink, one lock)."""

    def __init__(
        self,
        kind: Kind,
        make_sink: Callable[[], Sink],
        *,
        topic: str,
        dlq: str,
        max_body: int = MAX_BODY_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_inflight: int = 32,
        retry_after: int = 5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kind = kind
        self.make_sink = make_sink
        self.topic = topic
        self.dlq = dlq
        self.max_body = max_body
        self.max_record_bytes = max_record_bytes
        self.retry_after = retry_after
        self.clock = clock
        self.lock = threading.Lock()
        self.max_inflight = max_inflight
        self.inflight = threading.BoundedSemaphore(max_inflight)
        self.totals = Totals()
        self._counting = threading.Lock()
        # For /metrics (pipeline.metrics.ReceiverCollector): answers by status, DLQ records by reason.
        self.codes: dict[int, int] = {}
        self.reasons: dict[str, int] = {}
        self.latency = Latency(kind.name)
        self._sink: Sink | None = None

    # -- sink ----------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the sink now (fail fast at startup rather than on the first request)."""
        with self.lock:
            if self._sink is None:
                self._sink = self.make_sink()

    def close(self) -> None:
        """Abort whatever transaction is open (waits for a request being committed)."""
        with self.lock:
            self._drop_sink()

    def _drop_sink(self) -> None:
        sink, self._sink = self._sink, None
        close = getattr(sink, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()

    # -- requests ------------------------------------------------------------------------------
    def too_large(self, length: int) -> Response | None:
        """413 for a body above ``max_body`` (counted), else None."""
        if length > self.max_body:
            self._count("invalid")
            return Response(413, {"error": "too_large", "message": f"body is {length} bytes, the limit is "
                                                                     f"{self.max_body}"}, note="too_large")
        return None

    def unacceptable(self, req: Request) -> Response | None:
        """415 for a Content-Type the kind does not take, 400 for a body nested too deep (both
        counted, nothing produced), else None. A missing Content-Type is taken as JSON."""
        given = (req.header("content-type") or "").split(";")[0].strip().lower()
        if given and self.kind.content_types and given not in self.kind.content_types and not given.endswith("+json"):
            self._count("invalid")
            return Response(415, {"error": "unsupported_media_type",
                                  "message": f"Content-Type {given[:100]!r} is not accepted; send "
                                             f"{' or '.join(self.kind.content_types)}"}, note="content type")
        try:
            check_depth(req.body, MAX_BODY_DEPTH)
        except DecodeError as exc:
            self._count("invalid")
            return Response(400, {"ok": False, "error": exc.reason, "message": exc.message}, note=exc.reason)
        return None

    def busy(self) -> Response:
        return Response(503, {"error": "busy", "message": "too many requests in flight, retry later"},
                        {"Retry-After": str(self.retry_after)})

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """Answer one POST: authorize, split, convert, send + commit (one transaction)."""
        req = Request(body=body, headers={k.lower(): v for k, v in headers.items()},
                      request_id=uuid.uuid4().hex[:16], received_at=self.clock())
        self._count("requests")
        size = self.too_large(len(body))
        if size is not None:
            return size
        if self.kind.authorize is not None and not self.kind.authorize(req):
            self._count("refused")
            return Response(401, {"error": "unauthorized", "message": "missing or invalid signature"},
                            note="refused", label=self.kind.describe(req))
        refusal = self.kind.admit(req) if self.kind.admit is not None else None
        if refusal is not None:
            self._count("refused")
            refusal.note, refusal.label = refusal.note or "refused", self.kind.describe(req)
            return refusal
        bad = self.unacceptable(req)
        if bad is not None:
            bad.label = self.kind.describe(req)
            return bad
        try:
            resp = self._process(req)
        except Exception:  # a bug, not bad input: say so, produce nothing, keep serving
            log.exception("%s: request %s failed", self.kind.name, req.request_id)
            self._count("failed")
            resp = Response(500, {"error": "internal_error", "request_id": req.request_id,
                                  "message": f"request {req.request_id} failed; see the receiver's log"},
                            note=f"internal error (request {req.request_id})")
        resp.label = self.kind.describe(req)
        return resp

    def answered(self, status: int, seconds: float) -> None:
        """Count an answer by status and time it (for ``/metrics``)."""
        with self._counting:
            self.codes[status] = self.codes.get(status, 0) + 1
        self.latency.observe(seconds)

    def counts(self) -> tuple[dict[int, int], dict[str, int], int]:
        """Answers by status, DLQ records by reason and events produced so far (a consistent copy)."""
        with self._counting:
            return dict(self.codes), dict(self.reasons), self.totals.events

    def _count(self, name: str, n: int = 1) -> None:
        with self._counting:
            setattr(self.totals, name, getattr(self.totals, name) + n)

    def _process(self, req: Request) -> Response:
        body = req.body
        try:
            records = self.kind.split(req)
            outcomes = [self._convert(rec) for rec in records]
        except DecodeError as exc:
            # The body as a whole is malformed: it is the one record, dead-lettered.
            records = [RawRecord(payload=None, cursor={"request": req.request_id}, origin=self.kind.origin(req),
                                 original=body)]
            outcomes = [exc]
        outcomes = [self._fit(rec, out) for rec, out in zip(records, outcomes, strict=True)]
        replay = iter(outcomes)

        def convert(_: RawRecord) -> list[Event]:
            out = next(replay)
            if isinstance(out, DecodeError):
                raise out
            return out

        try:
            with self.lock:
                if self._sink is None:
                    self._sink = self.make_sink()
                try:
                    report = run_source(self.kind.name, [_capped(r, self.max_record_bytes) for r in records],
                                        convert, self._sink, topic=self.topic, dlq=self.dlq,
                                        chunk_records=len(records) + 1, chunk_seconds=float("inf"),
                                        clock=self.clock)
                except Exception:
                    self._drop_sink()  # abort the half-done transaction; a fresh producer next time
                    raise
                self._count("events", report.events)
                self._count("rejected", report.rejected)
                with self._counting:
                    for reason, n in report.reasons.items():
                        self.reasons[reason] = self.reasons.get(reason, 0) + n
        except Exception as exc:
            self._count("failed")
            log.warning("%s: Kafka did not take request %s: %s", self.kind.name, req.request_id, exc)
            # Details stay in the log: the sender (possibly unauthenticated) learns only "retry".
            return Response(503, {"error": "unavailable", "message": "Kafka did not acknowledge; retry later"},
                            {"Retry-After": str(self.retry_after)}, note="kafka failed")
        return self._answer(report, outcomes)

    def _convert(self, rec: RawRecord) -> list[Event] | DecodeError:
        try:
            return self.kind.convert(rec)
        except DecodeError as exc:
            return exc

    def _fit(self, rec: RawRecord, out: list[Event] | DecodeError) -> list[Event] | DecodeError:
        """Oversized events become DLQ records (Kafka would refuse them and the sender retry forever)."""
        if isinstance(out, list):
            too_big = [(ev.id, size) for ev in out if (size := len(encode(ev))) > self.max_record_bytes]
            if not too_big:
                return out
            out = DecodeError("oversized", f"event {too_big[0][0]} is {too_big[0][1]} bytes, a Kafka record "
                                           f"holds at most {self.max_record_bytes}")
        if len(rec.original) > self.max_record_bytes:
            return DecodeError(out.reason, f"{out.detail} [DLQ value truncated to {self.max_record_bytes} of "
                                           f"{len(rec.original)} bytes]", field=out.field, value=out.value)
        return out

    @staticmethod
    def _answer(report: Report, outcomes: list[list[Event] | DecodeError]) -> Response:
        body: dict[str, Any] = {"ok": True, "events": report.events, "rejected": report.rejected}
        errors = [o for o in outcomes if isinstance(o, DecodeError)]
        if errors:
            first = errors[0]
            body["error"] = first.reason
            body["message"] = first.message
            body["field"] = first.field
        if errors and not report.events:
            body["ok"] = False
            return Response(400, body, note=first.reason)
        return Response(200, body)


def _capped(rec: RawRecord, limit: int) -> RawRecord:
    if len(rec.original) <= limit:
        return rec
    return RawRecord(payload=rec.payload, cursor=rec.cursor, origin=rec.origin, original=rec.original[:limit])


# -- HTTP ------------------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8089`` for IPv6) -> (host, port); port 0 picks a free one."""
    host, sep, port = listen.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen {listen!r} must look like HOST:PORT (e.g. 127.0.0.1:8089, [::1]:8089)")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: Receiver
    registry: CollectorRegistry


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "causelog-receiver"
    sys_version = ""
    timeout = 30  # seconds a client may stall while sending (slow clients cannot pin threads forever)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one line per request is written by _log

    def _send(self, resp: Response, started: float, extra: str = "") -> None:
        data = resp.encoded()
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:
            pass  # the sender hung up; what was committed stays committed
        self.server.receiver.answered(resp.status, time.monotonic() - started)
        body = resp.body
        log.info("%s %d %s %s %s events=%s rejected=%s %.1fms from %s%s", self.server.receiver.kind.name,
                 resp.status, self.command, self.path, extra or "-", body.get("events", 0), body.get("rejected", 0),
                 (time.monotonic() - started) * 1000, self.client_address[0],
                 f" ({resp.note})" if resp.note else "")

    def do_GET(self) -> None:
        started = time.monotonic()
        if self.path.split("?", 1)[0] == "/metrics":
            self._metrics()
        elif self.path.split("?", 1)[0] in ("/health", "/healthz"):
            self._send(Response(200, {"ok": True, "kind": self.server.receiver.kind.name}), started)
        else:
            self._send(Response(404, {"error": "not_found", "message": "POST deliveries; GET /health"}), started)

    def _metrics(self) -> None:
        """The receiver's Prometheus metrics (text format; no credentials, nothing sensitive)."""
        data = exposition(self.server.registry)
        try:
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass

    def _not_allowed(self) -> None:
        self._send(Response(405, {"error": "method_not_allowed", "message": "POST deliveries; GET /health"},
                            {"Allow": "GET, POST"}), time.monotonic())

    do_PUT = do_DELETE = do_PATCH = _not_allowed

    def do_POST(self) -> None:
        started = time.monotonic()
        receiver = self.server.receiver
        self.close_connection = True
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_header is None:
            self._send(Response(411, {"error": "length_required", "message": "send a Content-Length"}), started)
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self._send(Response(400, {"error": "bad_request", "message": "bad Content-Length"}), started)
            return
        oversized = receiver.too_large(length)
        if oversized is not None:
            self._send(oversized, started)
            return
        if not receiver.inflight.acquire(blocking=False):
            self._send(receiver.busy(), started)
            return
        try:
            try:
                body = self.rfile.read(length)
            except OSError:
                return  # timed out or reset while sending: nothing to answer
            if len(body) < length:
                return  # the sender gave up mid-body
            resp = receiver.handle(body, dict(self.headers.items()))
            self._send(resp, started, resp.label)
        finally:
            receiver.inflight.release()


def make_server(receiver: Receiver, listen: str) -> _Server:
    """Bind (only) the ``--listen`` address; the caller runs ``serve_forever``."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_cls = type("_BoundServer", (_Server,), {"address_family": family})
    try:
        server: _Server = server_cls((host, port), _Handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc}") from None
    server.receiver = receiver
    server.registry = receiver_registry(receiver)
    return server


def serve(receiver: Receiver, listen: str, *, ready: Callable[[str], None] | None = None,
          grace: float = 10.0) -> Totals:
    """Serve until SIGTERM/SIGINT, then stop accepting, let requests in flight finish, abort the rest."""
    receiver.open()
    server = make_server(receiver, listen)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("%s: %s received, shutting down", receiver.kind.name, signal.Signals(signum).name)
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    try:
        if ready is not None:
            ready(url)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        deadline = time.monotonic() + grace
        # Requests in flight hold an `inflight` slot: take them all back (or give up after grace).
        taken = 0
        while taken < receiver.max_inflight and receiver.inflight.acquire(timeout=max(0.0, deadline - time.monotonic())):
            taken += 1
        receiver.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return receiver.totals
