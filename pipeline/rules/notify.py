"""Notification receivers (``notify.yaml``) and their payloads (pure: no I/O but reading the file).

```yaml
receivers:
  - name: ops
    type: webhook            # webhook (the alert as JSON) | slack | pagerduty | alertmanager
    url: http://127.0.0.1:9000/hooks/causelog
    min_level: medium        # optional: this level or above
    rules: [d9a89ab9-...]    # optional: only these rule ids
  - name: slack
    type: slack
    url_env: SLACK_WEBHOOK_URL   # the URL from an environment variable (secrets stay out of the file)
  - name: pd
    type: pagerduty          # Events API v2 trigger, dedup_key = alert id
    url: https://events.pagerduty.com/v2/enqueue
    routing_key_env: PAGERDUTY_ROUTING_KEY
  - name: am
    type: alertmanager       # Prometheus Alertmanager API v2: POST <url>/api/v2/alerts
    url: http://127.0.0.1:9093
attempts: 5                  # per alert and receiver (default 5)
backoff: 1.0                 # seconds before the 2nd attempt, doubling up to 300 (default 1.0)
concurrency: 4               # alerts in flight at once per receiver (default 4)
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.rules.model import LEVELS, Alert

KINDS = ("webhook", "slack", "pagerduty", "alertmanager")
_PD_SEVERITY = {"informational": "info", "low": "info", "medium": "warning", "high": "error", "critical": "critical"}


@dataclass(frozen=True)
class Receiver:
    """One place alerts go to."""

    name: str
    type: str
    url: str
    min_level: str = "informational"
    rules: tuple[str, ...] = ()
    routing_key: str = ""

    def wants(self, alert: Alert) -> bool:
        """Does this receiver take this alert (level and rule filters)?"""
        level = alert.level if alert.level in LEVELS else "medium"
        if LEVELS.index(level) < LEVELS.index(self.min_level):
            return False
        return not self.rules or alert.rule_id in self.rules

    @property
    def endpoint(self) -> str:
        """Where the payload is POSTed."""
        if self.type == "alertmanager":
            return self.url.rstrip("/") + "/api/v2/alerts"
        return self.url


@dataclass(frozen=True)
class NotifyConfig:
    """Receivers and the retry policy."""

    receivers: tuple[Receiver, ...] = ()
    attempts: int = 5
    backoff: float = 1.0
    concurrency: int = 4


def load_notify(path: Path, env: Mapping[str, str] | None = None) -> NotifyConfig:
    """Read ``notify.yaml``; no file means no receivers. A bad entry is a ConfigError naming it."""
    env = os.environ if env is None else env
    if not path.exists():
        return NotifyConfig()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with `receivers`")
    out = []
    for i, entry in enumerate(doc.get("receivers") or []):
        where = f"{path}: receivers[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        kind = entry.get("type")
        if kind not in KINDS:
            raise ConfigError(f"{where}: type {kind!r} is not one of {', '.join(KINDS)}")
        url = entry.get("url") or (env.get(entry["url_env"], "") if entry.get("url_env") else "")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: needs `url` (or `url_env` naming a set variable) starting with http(s)://")
        key = env.get(entry["routing_key_env"], "") if entry.get("routing_key_env") else str(entry.get("routing_key", ""))
        if kind == "pagerduty" and not key:
            raise ConfigError(f"{where}: pagerduty needs `routing_key_env` naming a set variable")
        level = entry.get("min_level", "informational")
        if level not in LEVELS:
            raise ConfigError(f"{where}: min_level {level!r} is not one of {', '.join(LEVELS)}")
        rules = entry.get("rules") or []
        if not isinstance(rules, list):
            raise ConfigError(f"{where}: `rules` must be a list of rule ids")
        out.append(Receiver(name=str(entry.get("name") or f"{kind}{i}"), type=kind, url=url, min_level=level,
                            rules=tuple(map(str, rules)), routing_key=key))
    attempts, backoff = doc.get("attempts", 5), doc.get("backoff", 1.0)
    if not isinstance(attempts, int) or attempts < 1 or not isinstance(backoff, int | float) or backoff < 0:
        raise ConfigError(f"{path}: `attempts` must be a positive integer and `backoff` a number of seconds >= 0")
    concurrency = doc.get("concurrency", 4)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 64:
        raise ConfigError(f"{path}: `concurrency` {concurrency!r} must be an integer between 1 and 64")
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"{path}: receiver name {dup!r} is used twice (each receiver has a consumer group of its own)")
    return NotifyConfig(receivers=tuple(out), attempts=attempts, backoff=float(backoff), concurrency=concurrency)


def payload(receiver: Receiver, alert: Alert) -> Any:
    """The JSON body one receiver expects for one alert."""
    import msgspec

    if receiver.type == "webhook":
        return msgspec.to_builtins(alert)
    if receiver.type == "slack":
        return {"text": f"[{alert.level.upper()}] {alert.summary} (rule {alert.rule_id}, alert {alert.id}, "
                        f"{alert.time})"}
    if receiver.type == "pagerduty":
        return {
            "routing_key": receiver.routing_key, "event_action": "trigger", "dedup_key": alert.id,
            "payload": {"summary": alert.summary[:1024], "source": "causelog", "severity": _PD_SEVERITY.get(
                alert.level, "warning"), "timestamp": alert.time, "component": alert.rule_id,
                "custom_details": {"rule_id": alert.rule_id, "title": alert.title, "event_ids": list(alert.event_ids),
                                   "chain_id": alert.chain_id, "person": alert.person, "tags": list(alert.tags)}},
        }
    # alertmanager
    return [{
        "labels": {"alertname": alert.title, "rule_id": alert.rule_id, "severity": alert.level,
                   "alert_id": alert.id, "source": "causelog"},
        "annotations": {"summary": alert.summary, "event_ids": ",".join(alert.event_ids),
                        "chain_id": alert.chain_id or "", "person": alert.person or ""},
        "startsAt": alert.time,
    }]
