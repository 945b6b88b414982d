"""The one exception hierarchy of causelog.

Every error raised on purpose by causelog derives from :class:`CauselogError`. Errors from
Kafka and ClickHouse clients are translated at the boundary into :class:`BusError` and
:class:`StoreError`, so callers (the CLI above all) can catch one root and print a clear message.
"""

from __future__ import annotations

from typing import Any


class CauselogError(Exception):
    """Root of every error causelog raises on purpose."""


class ConfigError(CauselogError):
    """A setting (``CAUSELOG_*`` variable, CLI option, config file) has an unusable value."""


class DecodeError(CauselogError):
    """A record is not a valid change-event envelope.

    ``field`` is a JSON path (``$.actor.kind``) or ``None`` when the record is not JSON at all;
    ``value`` is the offending value (shortened for display); ``reason`` is a stable, short
    machine-readable code (``bad_json``, ``missing_field``, ``wrong_type``, ``invalid_value``,
    ``oversized``, ``bad_signature``) and ``detail`` is the human sentence.
    """

    def __init__(self, reason: str, detail: str, *, field: str | None = None, value: Any = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        self.value = value
        super().__init__(self.message)

    def dlq_headers(self, origin: str, **extra: object) -> list[tuple[str, bytes]]:
        """Kafka headers of the dead-letter record of the input this error rejected."""
        headers = [
            ("reason", self.reason.encode()),
            ("error", self.message.encode()),
            ("field", (self.field or "").encode()),
            ("origin", origin.encode()),
        ]
        return headers + [(k.replace("_", "."), str(v).encode()) for k, v in extra.items()]

    @property
    def message(self) -> str:
        """One line naming the field, the value and what is wrong."""
        where = f" at {self.field}" if self.field else ""
        shown = "" if self.value is None else f" (got {_shorten(self.value)})"
        return f"{self.reason}{where}: {self.detail}{shown}"


class BusError(CauselogError):
    """Kafka could not be reached or refused a request (translated from confluent-kafka/aiokafka)."""


class StoreError(CauselogError):
    """ClickHouse could not be reached or refused a statement (translated from clickhouse-connect)."""


class QueryError(StoreError):
    """A user query was rejected (not read-only, bad syntax, unknown table...)."""


class SourceError(CauselogError):
    """A source connector cannot read its input (missing file, bad credentials, bad cursor)."""


class IntegrityError(CauselogError):
    """A proof, signature, checkpoint or key does not verify, or is malformed."""


def _shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def yaml_problem(exc: BaseException) -> str:
    """A YAML parser error in one line: the problem and where it is (PyYAML's own text spans
    several lines, with an excerpt of the file), for a ConfigError naming the file."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split()) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"
