"""Deliver alerts to the receivers of ``notify.yaml`` (HTTP POST, JSON), with retries and backoff.

Each receiver has its own thread and bounded queue, so a dead or slow receiver delays only its own
deliveries, never rule evaluation nor the other receivers. Every (alert, receiver) ends in one
:class:`Delivery` record (``delivered`` or ``failed``, with the attempts made and the last error)
handed to ``record``; an alert that finds a receiver's queue full is recorded as failed at once,
never dropped silently. Delivery is at least once while the process runs: a receiver that got a
request but whose answer was lost gets it again (PagerDuty dedups on ``dedup_key`` = alert id;
webhook receivers should dedup on the alert id).
"""

from __future__ import annotations

import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec
import orjson

from pipeline.rules.model import Alert
from pipeline.rules.notify import NotifyConfig, Receiver, payload


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one alert at one receiver."""

    alert_id: str
    receiver: str
    status: str  # delivered | failed
    attempts: int
    error: str = ""
    time: str = ""


def post_json(url: str, body: object, timeout: float) -> None:
    """POST ``body`` as JSON; raise on a non-2xx answer or a network error."""
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "causelog"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if not 200 <= resp.status < 300:
            raise OSError(f"HTTP {resp.status}")


class Notifier:
    """Background delivery to every receiver; ``submit`` never blocks."""

    def __init__(self, config: NotifyConfig, record: Callable[[Delivery], None], *, timeout: float = 10.0,
                 queue_size: int = 10_000, sleep: Callable[[float], None] = time.sleep,
                 post: Callable[[str, object, float], None] = post_json,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.record = record
        self.timeout = timeout
        self.sleep = sleep
        self.post = post
        self.clock = clock
        self._stop = threading.Event()
        self._queues: dict[str, queue.Queue[Alert | None]] = {}
        self._threads: list[threading.Thread] = []
        for r in config.receivers:
            q: queue.Queue[Alert | None] = queue.Queue(queue_size)
            self._queues[r.name] = q
            t = threading.Thread(target=self._loop, args=(r, q), name=f"notify-{r.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, alerts: Sequence[Alert]) -> None:
        """Queue each alert for every receiver that wants it."""
        for r in self.config.receivers:
            for a in alerts:
                if not r.wants(a):
                    continue
                try:
                    self._queues[r.name].put_nowait(a)
                except queue.Full:
                    self.record(Delivery(alert_id=a.id, receiver=r.name, status="failed", attempts=0,
                                         error="queue full (receiver too slow or down)", time=self._now()))

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the threads."""
        for q in self._queues.values():
            q.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()

    def _loop(self, receiver: Receiver, q: queue.Queue[Alert | None]) -> None:
        while not self._stop.is_set():
            alert = q.get()
            if alert is None:
                return
            self.record(self._deliver(receiver, alert))

    def _deliver(self, receiver: Receiver, alert: Alert) -> Delivery:
        body = payload(receiver, alert)
        error = ""
        for attempt in range(1, self.config.attempts + 1):
            try:
                self.post(receiver.endpoint, body, self.timeout)
                return Delivery(alert_id=alert.id, receiver=receiver.name, status="delivered", attempts=attempt,
                                time=self._now())
            except (OSError, urllib.error.URLError, ValueError) as exc:
                error = str(getattr(exc, "reason", None) or exc)
                if attempt < self.config.attempts and not self._stop.is_set():
                    self.sleep(self.config.backoff * 2 ** (attempt - 1))
        return Delivery(alert_id=alert.id, receiver=receiver.name, status="failed", attempts=self.config.attempts,
                        error=error, time=self._now())

    def _now(self) -> str:
        return self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
