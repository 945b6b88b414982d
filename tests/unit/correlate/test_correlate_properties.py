"""Property tests: the streaming reducer against the offline definition of DESIGN.md §3."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta

from correlate_helpers import NO_EXPIRY, ev, run, view
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.correlate import (
    Alias,
    CorrelationConfig,
    Edge,
    Expired,
    Member,
    State,
    compact,
    components,
    decode_state,
    encode_state,
    expire,
    key_edges,
    step,
)
from pipeline.model import Event, to_micros

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = (
    "session:pg:1",
    "session:pg:2",
    "trace:a",
    "trace:b",
    "request:r1",
    "commit:c1",
    "commit:c2",
    "deploy:d1",
    "change:acme/api#1",
)


def decode_event(i: int, code: int, *, max_time: int, prefix: str) -> Event:
    """Event number ``i`` from one drawn integer: its time and up to three link slots (a slot
    is empty or one of KEYS, repeats allowed). Code 0 is the simplest event: time 0, no links.
    One draw per event keeps generation cheap; hypothesis still shrinks towards fewer links and
    earlier times."""
    t, rest = code % (max_time + 1), code // (max_time + 1)
    links = []
    for _ in range(3):
        rest, slot = divmod(rest, len(KEYS) + 1)
        if slot:
            links.append(KEYS[slot - 1])
    # Ids that do not sort like arrival or time order.
    return ev(f"{prefix}{(i * 7919) % 1000:03d}-{i}", t, *links)


@st.composite
def event_sets(draw: st.DrawFn, *, max_size: int = 24, max_time: int = 30, prefix: str = "e") -> list[Event]:
    """Distinct events over a small key space: random (often tied) times, 0-3 links."""
    codes = draw(st.lists(st.integers(0, (max_time + 1) * (len(KEYS) + 1) ** 3 - 1), max_size=max_size))
    return [decode_event(i, c, max_time=max_time, prefix=prefix) for i, c in enumerate(codes)]


@st.composite
def arrivals(draw: st.DrawFn, **kw: int) -> tuple[list[Event], list[Event]]:
    """Events and an arrival order: seed 0 is time order, any other seed a random permutation."""
    events = draw(event_sets(**kw))
    seed = draw(st.integers(0, 2**32))
    order = sorted(events, key=lambda e: (e.time, e.id))
    if seed:
        random.Random(seed).shuffle(order)
    return events, order


@FAST
@given(arrivals())
def test_any_arrival_order_gives_the_offline_components_and_edges(
    case: tuple[list[Event], list[Event]],
) -> None:
    events, order = case
    state, out = run(order)
    v = view(out)

    assert v.chains() == components(events)
    assert v.edges == key_edges(events)
    # Every alias points to a strictly earlier head.
    time_of = {e.id: (to_micros(e.time), e.id) for e in events}
    for a in (x for x in out if isinstance(x, Alias)):
        assert time_of[a.new_chain_id] < time_of[a.old_chain_id]
    # Every Member names a chain that exists, and the edges of a key run later -> earlier.
    for e in out:
        if isinstance(e, Edge):
            assert time_of[e.to_event] < time_of[e.from_event]
            assert e.time_us == time_of[e.from_event][0]
            assert e.key_type == e.key.split(":", 1)[0]
    # The state holds exactly the keys used, each remembering its events in (time, id) order.
    by_key = defaultdict(list)
    for e in events:
        for k in dict.fromkeys(e.links):
            by_key[k].append((to_micros(e.time), e.id))
    assert set(state.keys) == set(by_key)
    for k, entries in by_key.items():
        assert state.events_of_key(k) == sorted(entries)
        assert state.chain_of_key(k) == components(events)[entries[0][1]]


@FAST
@given(arrivals(), st.integers(1, 4))
def test_a_bounded_window_never_changes_membership(
    case: tuple[list[Event], list[Event]], window: int
) -> None:
    events, order = case
    config = CorrelationConfig(ttls=dict(NO_EXPIRY.ttls), default_ttl=None, max_per_key=window)
    state, out = run(order, config=config)
    v = view(out)  # retractions always match a live edge

    assert v.chains() == components(events)
    time_of = {e.id: (to_micros(e.time), e.id) for e in events}
    for _key, from_event, to_event in v.edges:
        assert time_of[to_event] < time_of[from_event]
    assert all(len(state.events_of_key(k)) <= window for k in state.keys)
    # In time order the window loses nothing: each event's predecessor is the newest remembered.
    in_order = sorted(events, key=lambda e: (e.time, e.id))
    assert view(run(in_order, config=config)[1]).edges == key_edges(events)


@st.composite
def three_groups(draw: st.DrawFn) -> list[list[Event]]:
    return [draw(event_sets(max_size=8, prefix=p)) for p in "abc"]


@FAST
@given(three_groups())
def test_merging_is_associative_and_order_independent(groups: list[list[Event]]) -> None:
    a, b, c = groups
    orders = [a + b + c, c + b + a, b + a + c, b + c + a, a + c + b, c + a + b]
    results = []
    for order in orders:
        state, out = run(order)
        results.append((view(out).chains(), state.snapshot()))
    expected = components(a + b + c)
    for chains, snapshot in results:
        assert chains == expected
        # The same live keys, chains, heads and remembered events, whatever the grouping.
        assert snapshot == results[0][1]


TTLS = {
    "session": timedelta(seconds=5),
    "trace": timedelta(seconds=3),
    "request": timedelta(seconds=2),
    "deploy": timedelta(seconds=10),
    "change": None,
    "commit": None,
}


def expected_with_expiry(
    events: list[Event],
) -> tuple[dict[str, str], set[tuple[str, str, str]], dict[str, int]]:
    """Offline model of expiry for events processed in (time, id) order with now = event time: a
    key is a new *instance* whenever the gap to its previous event exceeds the TTL."""
    ttl_us = {k: None if v is None else int(v.total_seconds() * 1e6) for k, v in TTLS.items()}
    ordered = sorted(events, key=lambda e: (e.time, e.id))
    last: dict[str, tuple[int, int]] = {}  # key -> (last time, instance)
    renamed = []
    for e in ordered:
        t = to_micros(e.time)
        links = []
        for k in dict.fromkeys(e.links):
            ttl = ttl_us[k.split(":", 1)[0]]
            prev = last.get(k)
            inst = 0 if prev is None else prev[1] + (ttl is not None and prev[0] + ttl < t)
            last[k] = (t, inst)
            links.append(f"{k}@{inst}")
        renamed.append(ev(e.id, (e.time - ev("x", 0).time), *links))
    edges = {(k.rsplit("@", 1)[0], f, p) for k, f, p in key_edges(renamed)}
    instances = {k: inst + 1 for k, (_, inst) in last.items()}
    return components(renamed), edges, instances


@FAST
@given(event_sets(max_time=40), st.sampled_from([timedelta(0), timedelta(seconds=4), timedelta(hours=1)]))
def test_expiry_behaves_as_configured(events: list[Event], sweep_every: timedelta) -> None:
    config = CorrelationConfig(ttls=TTLS, max_per_key=10**6, sweep_every=sweep_every)
    ordered = sorted(events, key=lambda e: (e.time, e.id))
    state, out = run(ordered, config=config)
    v = view(out)

    chains, edges, instances = expected_with_expiry(events)
    assert v.chains() == chains
    assert v.edges == edges
    # A key was expired before each re-opening (by a sweep or when the next event found it dead)
    # and at most once more (swept after its last event).
    for k, n in instances.items():
        assert n - 1 <= v.expired.count(k) <= n

    # Everything that expires, eventually does; commit and change keys never do.
    end = max((e.time for e in events), default=ev("x", 0).time)
    state, gone = expire(state, end + timedelta(days=365 * 30))
    assert all(isinstance(g, Expired) for g in gone)
    assert [g.key for g in gone if isinstance(g, Expired)] == sorted(
        g.key for g in gone if isinstance(g, Expired)
    )
    assert all(k.startswith(("commit:", "change:")) for k in state.keys)
    used = {k for e in events for k in e.links}
    assert set(state.keys) == {k for k in used if k.startswith(("commit:", "change:"))}


@FAST
@given(arrivals(), st.data())
def test_replaying_emits_nothing_new(case: tuple[list[Event], list[Event]], data: st.DataObject) -> None:
    events, order = case
    state, first = run(order)
    replay = data.draw(st.lists(st.sampled_from(events), max_size=30)) if events else []

    for e in replay:
        _, out = step(state, e, max(x.time for x in events))
        assert out == ([] if e.links else [Member(e.id, e.id)])
    assert view(first).chains() == components(events)

    # Duplicates interleaved with first arrivals are no-ops as well.
    mixed = order + replay
    random.Random(data.draw(st.integers(0, 2**32))).shuffle(mixed)
    state2 = State(NO_EXPIRY)
    seen: set[str] = set()
    emitted = []
    for e in mixed:
        _, out = step(state2, e, max(x.time for x in events))
        if e.id in seen and e.links:
            assert out == []
        seen.add(e.id)
        emitted.extend(out)
    assert view(emitted).chains() == components(events)
    assert view(emitted).edges == key_edges(events)


@FAST
@given(
    arrivals(max_time=40), st.data(), st.integers(1, 3), st.sampled_from([timedelta(0), timedelta(seconds=7)])
)
def test_restart_from_encoded_state_equals_an_uninterrupted_run(
    case: tuple[list[Event], list[Event]], data: st.DataObject, window: int, sweep_every: timedelta
) -> None:
    events, order = case
    # With replays mixed in (recognised or, past the window or TTL, taken as new).
    replays = data.draw(st.lists(st.sampled_from(events), max_size=8)) if events else []
    order = order + replays
    random.Random(data.draw(st.integers(0, 2**32))).shuffle(order)
    config = CorrelationConfig(ttls=TTLS, max_per_key=window, sweep_every=sweep_every)
    full_state, full = run(order, config=config)

    cut = data.draw(st.integers(0, len(order)))
    state, first = run(order[:cut], config=config)
    blob = encode_state(state)
    assert encode_state(decode_state(blob, config)) == blob
    restored = decode_state(blob, config)
    # The watermark continues from where the first run stopped.
    watermark = max((e.time for e in order[:cut]), default=None)
    rest = []
    for e in order[cut:]:
        watermark = e.time if watermark is None else max(watermark, e.time)
        rest.extend(step(restored, e, watermark)[1])

    assert first + rest == full
    assert encode_state(restored) == encode_state(full_state)


@FAST
@given(arrivals(), st.data())
def test_compaction_is_never_observable(case: tuple[list[Event], list[Event]], data: st.DataObject) -> None:
    """Compaction only forgets chains no live key refers to. (The one case where that shows is a
    replay past the dedup horizon of an event that headed a since-merged chain; not drawn here.)"""
    _, order = case
    _, plain = run(order)
    marks = set(data.draw(st.lists(st.integers(0, max(len(order) - 1, 0)), max_size=5)))
    state = State(NO_EXPIRY)
    out = []
    for i, e in enumerate(order):
        if i in marks:
            compact(state)
            assert not state.parent
        out.extend(step(state, e, e.time)[1])
    assert out == plain
