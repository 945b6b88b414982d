"""Builders shared by the correlation tests (not a test module)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from pipeline.correlate import ChainView, CorrelationConfig, Emission, State, step
from pipeline.model import LINK_TYPES, Actor, Event, Target

BASE = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
ALICE = Actor(id="alice@acme.io", kind="human", assurance="claimed")
SVC = Target(kind="service", id="api", environment="prod")

#: No expiry, effectively unbounded window: the reducer must then equal the offline reference.
NO_EXPIRY = CorrelationConfig(ttls=dict.fromkeys(LINK_TYPES), default_ttl=None, max_per_key=10**6)


def ev(
    eid: str,
    at: float | timedelta,
    *links: str,
    type: str = "test.event",
    actor: Actor = ALICE,
    target: Target = SVC,
) -> Event:
    """An event ``eid`` at ``BASE + at`` (seconds or timedelta) carrying ``links``."""
    delta = at if isinstance(at, timedelta) else timedelta(seconds=at)
    return Event(
        specversion="1.0",
        id=eid,
        source="causelog://test",
        type=type,
        time=BASE + delta,
        scope="acme",
        actor=actor,
        target=target,
        action="update",
        outcome="success",
        links=tuple(links),
    )


def run(
    events: Iterable[Event],
    state: State | None = None,
    *,
    config: CorrelationConfig | None = None,
    now: datetime | None = None,
) -> tuple[State, list[Emission]]:
    """Step every event in order; ``now`` defaults to the watermark (latest event time seen)."""
    if state is None:
        state = State(config if config is not None else NO_EXPIRY)
    out: list[Emission] = []
    watermark = now
    for e in events:
        if now is None:
            watermark = e.time if watermark is None else max(watermark, e.time)
        assert watermark is not None
        state2, emitted = step(state, e, watermark)
        assert state2 is state
        out.extend(emitted)
    return state, out


def view(emissions: Sequence[Emission]) -> ChainView:
    return ChainView().apply(emissions)
