"""Deliver one alert to one receiver of ``notify.yaml`` (HTTP POST, JSON), with retries and backoff.

:func:`deliver` makes the attempts and returns the final :class:`Delivery` (``delivered``, or
``failed`` after every attempt, with the last error). The alert sink
(:mod:`pipeline.stream.alert_sink`) runs it per receiver from ``<prefix>.alerts``, records each
outcome in ``alert_deliveries`` and commits its offsets only then, so delivery is at least once
across restarts: a receiver whose answer was lost, or whose alert was in flight when the process
died, gets the alert again. PagerDuty dedups on ``dedup_key`` = alert id; webhook receivers should
dedup on the alert's ``id``.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import orjson

from pipeline.rules.model import Alert
from pipeline.rules.notify import Receiver, payload

#: The longest wait between two attempts (the doubling stops there).
MAX_BACKOFF = 300.0


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


def utc_now() -> str:
    """Now, as the RFC 3339 UTC microsecond string of a :class:`Delivery`."""
    return fmt_time(datetime.now(UTC))


def fmt_time(t: datetime) -> str:
    """``t`` as an RFC 3339 UTC string with microseconds."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def deliver(receiver: Receiver, alert: Alert, *, attempts: int, backoff: float, timeout: float,
            wait: Callable[[float], bool], post: Callable[[str, object, float], None] = post_json,
            now: Callable[[], str] = utc_now, failed: Callable[[int, str], None] | None = None) -> Delivery | None:
    """POST ``alert`` to ``receiver`` up to ``attempts`` times, waiting ``backoff`` seconds before the
    second attempt and doubling after (at most :data:`MAX_BACKOFF`). ``wait(seconds)`` sleeps and returns True when the process is
    stopping: then there is no final outcome and None is returned (the alert is delivered again by
    whoever resumes from the committed offsets). ``failed(attempt, error)`` hears of each failed attempt."""
    body = payload(receiver, alert)
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            post(receiver.endpoint, body, timeout)
            return Delivery(alert_id=alert.id, receiver=receiver.name, status="delivered", attempts=attempt,
                            time=now())
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                error = f"HTTP {exc.code} {exc.reason}"
            else:
                error = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
            if failed is not None:
                failed(attempt, error)
        if attempt < attempts and wait(min(backoff * 2.0 ** min(attempt - 1, 30), MAX_BACKOFF)):
            return None
    return Delivery(alert_id=alert.id, receiver=receiver.name, status="failed", attempts=attempts, error=error,
                    time=now())
