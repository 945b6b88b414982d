"""Configuration of the correlation reducer (DESIGN.md §3).

The configuration is *not* part of the serialised state: the worker passes the same
:class:`CorrelationConfig` to :func:`~pipeline.correlate.state.decode_state` after a restart.
A key's expiry deadline is computed when the key is updated (``last event time + ttl``), so a
changed TTL applies to a key from its next event on: a key restored with another TTL than the one
its deadline was computed with keeps that deadline (stored with it) until then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

#: Time-to-live per link key type: how long after a key's latest event (by event time) it stays
#: joinable. ``None`` never expires. Sessions end, traces and requests age, deploys are referred to
#: for weeks; a commit or a change (pull request) may be referred to at any time.
DEFAULT_TTLS: Mapping[str, timedelta | None] = MappingProxyType(
    {
        "session": timedelta(hours=12),
        "trace": timedelta(hours=24),
        "request": timedelta(hours=24),
        "deploy": timedelta(days=30),
        "change": None,
        "commit": None,
    }
)


def _micros(value: timedelta) -> int:
    return (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds


@dataclass(frozen=True)
class CorrelationConfig:
    """How the reducer remembers keys.

    ``ttls`` overrides :data:`DEFAULT_TTLS` per key type (types not named keep their default);
    ``default_ttl`` applies to a key type that is in neither (keys built without validation).
    ``max_per_key`` bounds the events remembered per key: once a key holds that many, its oldest
    remembered event is forgotten on each insert. Forgetting only affects *edges* of later
    out-of-order arrivals: an event older than the oldest remembered event of a key gets a single
    edge from that oldest remembered event (it "attaches to the oldest remembered one") instead of
    its exact place in the key's history, and it is itself not remembered. Chain membership is
    never affected. ``sweep_every`` is how far ``now`` must advance between two full expiry
    sweeps that :func:`~pipeline.correlate.reducer.step` runs by itself.
    """

    ttls: Mapping[str, timedelta | None] = field(default_factory=dict)
    default_ttl: timedelta | None = timedelta(hours=24)
    max_per_key: int = 64
    sweep_every: timedelta = timedelta(seconds=60)
    # Derived, in microseconds (filled in __post_init__).
    ttl_us: Mapping[str, int | None] = field(init=False, repr=False, compare=False)
    default_ttl_us: int | None = field(init=False, repr=False, compare=False)
    sweep_every_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        merged = {**DEFAULT_TTLS, **self.ttls}
        for name, ttl in (*merged.items(), ("default_ttl", self.default_ttl)):
            if ttl is not None and ttl <= timedelta(0):
                raise ValueError(f"ttl of {name!r} must be positive or None, got {ttl}")
        if self.max_per_key < 1:
            raise ValueError(f"max_per_key must be >= 1, got {self.max_per_key}")
        if self.sweep_every < timedelta(0):
            raise ValueError(f"sweep_every must not be negative, got {self.sweep_every}")
        object.__setattr__(self, "ttls", MappingProxyType(merged))
        object.__setattr__(
            self,
            "ttl_us",
            MappingProxyType({k: None if v is None else _micros(v) for k, v in merged.items()}),
        )
        object.__setattr__(
            self, "default_ttl_us", None if self.default_ttl is None else _micros(self.default_ttl)
        )
        object.__setattr__(self, "sweep_every_us", _micros(self.sweep_every))

    def ttl_of(self, key: str) -> int | None:
        """TTL in microseconds of a link key (by its type prefix), ``None`` if it never expires."""
        return self.ttl_us.get(key_type(key), self.default_ttl_us)


def key_type(key: str) -> str:
    """The type of a link key: ``session`` of ``session:postgres:123``."""
    i = key.find(":")
    return key if i < 0 else key[:i]
