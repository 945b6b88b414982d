"""The change-event envelope (DESIGN.md §2) as frozen msgspec structs.

Decoding a record with these types validates it in one pass (types, enums, patterns, required
fields), which is what lets the worker check every record at the edge without a separate
JSON-schema pass. ``schemas/change_event.schema.json`` describes the same contract for other
languages; a unit test keeps the two in agreement.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

Assurance = Literal["none", "claimed", "authenticated", "mfa", "signed"]
ActorKind = Literal["human", "service", "unknown"]
Outcome = Literal["success", "failure", "unknown"]

#: Link key types of DESIGN.md §2 (strong correlation keys).
LINK_TYPES = ("session", "trace", "commit", "deploy", "change", "request")

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^\S+\Z")]
_Type = Annotated[str, msgspec.Meta(max_length=128, pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+\Z")]
_Link = Annotated[
    str, msgspec.Meta(max_length=1024, pattern=r"^(session|trace|commit|deploy|change|request):\S+\Z")
]
_Time = Annotated[datetime, msgspec.Meta(tz=True)]

# ClickHouse DateTime64 covers 1900..2299; anything outside is a producer bug, not history.
_MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)


class Actor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who did it: ``principal`` is the raw per-system identity, ``id`` the resolved one."""

    id: _NonEmpty
    kind: ActorKind
    assurance: Assurance
    display: str = ""
    principal: str = ""
    verified: bool = False


class Target(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What was changed or accessed."""

    kind: _NonEmpty
    id: _NonEmpty
    name: str = ""
    environment: str = ""
    service: str = ""


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One change event. Field meanings are those of DESIGN.md §2."""

    specversion: Literal["1.0"]
    id: _Id
    source: _NonEmpty
    type: _Type
    time: _Time
    scope: _NonEmpty
    actor: Actor
    target: Target
    action: _NonEmpty
    outcome: Outcome
    links: tuple[_Link, ...] = ()
    subject: str | None = None
    observed_time: _Time | None = None
    diff: dict[str, Any] | None = None
    raw: Any = None
    source_seq: str | int | None = None
    signature: str | None = None

    def __post_init__(self) -> None:
        check_ranges(self)

    @property
    def time_us(self) -> int:
        """Event time as UTC microseconds since the epoch."""
        return to_micros(self.time)


def check_ranges(event: Any) -> None:
    """Checks no type can express; raises ValueError (msgspec reports it as a validation error)."""
    for name in ("time", "observed_time"):
        value = getattr(event, name)
        if value is not None and not (_MIN_TIME <= value < _MAX_TIME):
            # The codec turns this sentence into a DecodeError at ``$.<name>``.
            raise ValueError(f"`{name}` must lie between 1970 and 2200")
    # Positions are 64-bit wherever they come from (offsets, LSNs); larger is a bug upstream.
    seq = event.source_seq
    if isinstance(seq, int) and not (-(2**63) <= seq < 2**64):
        raise ValueError("`source_seq` must fit in 64 bits")


def to_micros(value: datetime) -> int:
    """UTC microseconds since the epoch of an aware datetime (exact, no float rounding)."""
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros`."""
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with exactly six fractional digits: the one spelling causelog writes."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_id(source: str, *identity: str | int) -> str:
    """Deterministic event id from the source and the record's own identity.

    The same input always yields the same id, so replaying a source is harmless downstream.
    """
    h = hashlib.sha256(source.encode())
    for part in identity:
        h.update(b"\x1f")
        h.update(str(part).encode())
    return h.hexdigest()[:32]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
