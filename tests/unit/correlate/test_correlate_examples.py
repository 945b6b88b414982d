"""Example-based tests of the correlation reducer on realistic chains (DESIGN.md §3)."""

from __future__ import annotations

from array import array
from datetime import timedelta

import msgspec
import pytest
from correlate_helpers import BASE, NO_EXPIRY, ev, run, view

from pipeline.correlate import (
    DEFAULT_TTLS,
    Alias,
    ChainView,
    CorrelationConfig,
    Edge,
    EdgeRemoved,
    Expired,
    Member,
    State,
    compact,
    components,
    decode_emissions,
    decode_state,
    encode_emissions,
    encode_state,
    expire,
    key_type,
    resolve,
    step,
    step_raw,
)
from pipeline.model import Actor, Target, to_micros

MIN = 60.0
HOUR = 3600.0


def us(seconds: float) -> int:
    return to_micros(BASE + timedelta(seconds=seconds))


def edges_of(out: list, key: str) -> list[tuple[str, str]]:
    return [(e.from_event, e.to_event) for e in out if isinstance(e, Edge) and e.key == key]


def test_commit_to_deploy_status_is_one_chain_headed_by_the_commit() -> None:
    sha = "commit:3f9c2ab0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6"
    events = [
        ev("push", 0, sha, type="git.push"),
        ev("pr-merged", 10 * MIN, "change:acme/api#42", sha, type="github.pull_request.merged"),
        ev("ci-run", 12 * MIN, sha, "trace:ci-881", type="ci.run.completed"),
        ev("deploy", 20 * MIN, sha, "deploy:d-7", type="deploy.started"),
        ev("deploy-ok", 24 * MIN, "deploy:d-7", type="deploy.succeeded"),
    ]
    state, out = run(events)

    assert [m for m in out if isinstance(m, Member)] == [Member(e.id, "push") for e in events]
    assert not [a for a in out if isinstance(a, Alias | EdgeRemoved)]
    assert edges_of(out, sha) == [("pr-merged", "push"), ("ci-run", "pr-merged"), ("deploy", "ci-run")]
    assert edges_of(out, "deploy:d-7") == [("deploy-ok", "deploy")]
    assert edges_of(out, "change:acme/api#42") == []
    deploy_edge = next(e for e in out if isinstance(e, Edge) and e.key == "deploy:d-7")
    assert deploy_edge == Edge("deploy:d-7", "deploy", "deploy-ok", "deploy", us(24 * MIN))
    assert state.chain_of_key("deploy:d-7") == "push"


def test_login_assumed_role_api_calls_and_the_same_person_elsewhere_stays_apart() -> None:
    sess = "session:aws:ASIA-1"
    events = [
        ev("login", 0, sess, type="iam.console.login"),
        ev("assume", 5, sess, type="iam.role.assumed"),
        ev("call-1", 9, sess, "request:r-1", type="aws.s3.putobject"),
        ev("call-2", 11, sess, "request:r-2", type="aws.iam.createuser"),
        ev("call-3", 30, sess, type="aws.ec2.runinstances"),
        # Same actor, same target, another session: actor and target are never links.
        ev("login-2", 60, "session:aws:ASIA-2", type="iam.console.login"),
        ev("unlinked", 61, type="iam.console.login"),
    ]
    _, out = run(events)
    v = view(out)

    assert {e.id: v.chain_of(e.id) for e in events} == {
        "login": "login",
        "assume": "login",
        "call-1": "login",
        "call-2": "login",
        "call-3": "login",
        "login-2": "login-2",
        "unlinked": "unlinked",
    }
    assert edges_of(out, sess) == [
        ("assume", "login"),
        ("call-1", "assume"),
        ("call-2", "call-1"),
        ("call-3", "call-2"),
    ]


def test_db_session_start_then_queries() -> None:
    events = [ev("db-start", 0, "session:postgres:123", type="db.session.started")]
    events += [ev(f"q{i}", 1 + i, "session:postgres:123", type="db.query") for i in range(4)]
    events.append(ev("other", 2, "session:postgres:124", type="db.session.started"))
    _, out = run(events)

    assert edges_of(out, "session:postgres:123") == [
        ("q0", "db-start"),
        ("q1", "q0"),
        ("q2", "q1"),
        ("q3", "q2"),
    ]
    assert all(e.key_type == "session" for e in out if isinstance(e, Edge))
    assert view(out).chains() == components(events)
    assert view(out).chain_of("other") == "other"


def test_an_out_of_order_arrival_lands_between_its_neighbours() -> None:
    state, out = run([ev("deploy", 0, "deploy:d-1"), ev("smoke-test", 60, "deploy:d-1")])
    _, late = step(state, ev("status", 30, "deploy:d-1"), BASE + timedelta(seconds=60))

    assert late == [
        Member("status", "deploy"),
        EdgeRemoved("deploy:d-1", "deploy", "smoke-test", "deploy", us(60)),
        Edge("deploy:d-1", "deploy", "status", "deploy", us(30)),
        Edge("deploy:d-1", "deploy", "smoke-test", "status", us(60)),
    ]
    assert view(out + late).edges == {
        ("deploy:d-1", "status", "deploy"),
        ("deploy:d-1", "smoke-test", "status"),
    }


def test_an_earlier_event_arriving_late_becomes_the_head() -> None:
    state, out = run([ev("b", 10, "commit:c"), ev("c", 20, "commit:c")])
    _, late = step(state, ev("a", 5, "commit:c"), BASE + timedelta(seconds=20))

    assert late == [Member("a", "a"), Alias("b", "a"), Edge("commit:c", "commit", "b", "a", us(10))]
    assert view(out + late).chains() == {"a": "a", "b": "a", "c": "a"}
    assert state.chain_of_key("commit:c") == "a"


def test_two_chains_merge_and_the_older_id_wins() -> None:
    state, out = run(
        [
            ev("trace-root", 0, "trace:t1"),
            ev("db-login", 5, "session:postgres:9"),
            ev("db-query", 6, "session:postgres:9"),
            ev("span", 7, "trace:t1"),
        ]
    )
    # A query tagged with the trace id joins the DB session chain into the trace chain.
    _, joined = step(
        state, ev("traced-query", 8, "session:postgres:9", "trace:t1"), BASE + timedelta(seconds=8)
    )

    assert joined == [
        Member("traced-query", "trace-root"),
        Alias("db-login", "trace-root"),
        Edge("session:postgres:9", "session", "traced-query", "db-query", us(8)),
        Edge("trace:t1", "trace", "traced-query", "span", us(8)),
    ]
    v = view(out + joined)
    assert v.chain_of("db-login") == v.chain_of("db-query") == "trace-root"
    assert resolve(v.aliases, "db-login") == "trace-root"


def test_three_chains_joined_by_one_event_alias_to_the_oldest_in_head_order() -> None:
    state, _ = run([ev("c", 3, "trace:c"), ev("a", 1, "commit:a"), ev("b", 2, "deploy:b")])
    _, out = step(state, ev("x", 9, "trace:c", "deploy:b", "commit:a"), BASE + timedelta(seconds=9))

    assert out[:3] == [Member("x", "a"), Alias("b", "a"), Alias("c", "a")]


def test_aliases_resolve_transitively() -> None:
    # b -> a (a arrives late and earlier); then z, earlier still, on another key joins them.
    _, out = run(
        [
            ev("b", 10, "commit:1"),
            ev("a", 5, "commit:1"),
            ev("y", 20, "trace:t"),
            ev("z", 1, "trace:t"),
            ev("join", 30, "trace:t", "commit:1"),
        ]
    )
    aliases = [a for a in out if isinstance(a, Alias)]
    assert aliases == [Alias("b", "a"), Alias("y", "z"), Alias("a", "z")]
    v = view(out)
    assert v.members["b"] == "b"
    assert v.chain_of("b") == "z"
    assert v.chains() == dict.fromkeys(["b", "a", "y", "z", "join"], "z")


def test_resolve_rejects_a_cycle() -> None:
    assert resolve({"a": "b", "b": "c"}, "a") == "c"
    assert resolve({}, "a") == "a"
    with pytest.raises(ValueError, match="cycle"):
        resolve({"a": "b", "b": "a"}, "a")
    with pytest.raises(ValueError, match="aliased twice"):
        ChainView().apply([Alias("a", "b"), Alias("a", "c")])


def test_an_event_without_links_is_a_singleton_chain_and_keeps_no_state() -> None:
    state = State()
    _, out = step(state, ev("lonely", 0), BASE)
    assert out == [Member("lonely", "lonely")]
    assert not state.keys and not state.heads and not state.parent


def test_ties_in_time_are_ordered_by_id() -> None:
    _, out = run([ev("m", 0, "commit:c"), ev("z", 0, "commit:c"), ev("a", 0, "commit:c")])
    assert view(out).chains() == dict.fromkeys("mza", "a")
    assert view(out).edges == {("commit:c", "m", "a"), ("commit:c", "z", "m")}


def test_repeated_links_in_one_event_count_once() -> None:
    _, out = run([ev("a", 0, "commit:c"), ev("b", 1, "commit:c", "commit:c")])
    assert out == [Member("a", "a"), Member("b", "a"), Edge("commit:c", "commit", "b", "a", us(1))]


def test_a_replay_is_a_no_op() -> None:
    events = [ev("a", 0, "commit:c", "trace:t"), ev("b", 1, "trace:t"), ev("c", 2)]
    state, first = run(events)
    before = state.snapshot()
    _, again = run(events, state)

    assert again == [Member("c", "c")]  # no state for a link-less event: the same row again
    after = state.snapshot()
    assert (after["keys"], after["heads"]) == (before["keys"], before["heads"])


def test_session_keys_expire_commit_keys_do_not() -> None:
    config = CorrelationConfig()  # the defaults: session 12 h, commit never
    state, out = run(
        [ev("login", 0, "session:aws:1"), ev("push", 0, "commit:c"), ev("call", HOUR, "session:aws:1")],
        config=config,
    )
    much_later = 13 * HOUR + HOUR
    _, later = run(
        [ev("call-late", much_later, "session:aws:1"), ev("deploy", 400 * 24 * HOUR, "commit:c")],
        state,
        config=config,
    )

    assert Expired("session:aws:1") in later
    v = view(out + later)
    assert v.chain_of("call-late") == "call-late"  # the old session is gone: a new chain
    assert v.chain_of("deploy") == "push"  # a commit is joinable for ever
    assert list(state.keys) != [] and "commit:c" in state.keys


def test_expiry_boundary_is_inclusive_of_the_ttl() -> None:
    config = CorrelationConfig(ttls={"session": timedelta(seconds=10)})
    state, _ = run([ev("a", 0, "session:s:1")], config=config)
    assert expire(state, BASE + timedelta(seconds=10))[1] == []  # exactly ttl old: still live
    assert expire(state, BASE + timedelta(seconds=10, microseconds=1))[1] == [Expired("session:s:1")]
    assert state.keys == {}
    # The chain head lingers until compaction (amortised; never observable).
    assert state.heads == {"a": us(0)}
    compact(state)
    assert state.heads == {}


def test_a_dead_key_is_not_joined_even_before_a_sweep() -> None:
    config = CorrelationConfig(ttls={"trace": timedelta(seconds=10)}, sweep_every=timedelta(days=1))
    state, _ = run([ev("a", 0, "trace:t")], config=config)
    _, out = step(state, ev("b", 11, "trace:t"), BASE + timedelta(seconds=11))
    assert out == [Expired("trace:t"), Member("b", "b")]


def test_expire_uses_the_latest_event_time_not_the_latest_arrival() -> None:
    config = CorrelationConfig(ttls={"session": timedelta(seconds=10)})
    state, _ = run([ev("late", 8, "session:s"), ev("early", 1, "session:s")], config=config)
    assert expire(state, BASE + timedelta(seconds=15))[1] == []
    assert expire(state, BASE + timedelta(seconds=19))[1] == [Expired("session:s")]


def test_a_full_window_attaches_an_older_event_to_the_oldest_remembered() -> None:
    config = CorrelationConfig(max_per_key=3, ttls={"session": None})
    state, out = run([ev(f"e{i}", 10 * i, "session:s") for i in range(1, 6)], config=config)
    assert state.events_of_key("session:s") == [(us(30), "e3"), (us(40), "e4"), (us(50), "e5")]

    _, late = step(state, ev("old", 15, "session:s"), BASE + timedelta(seconds=50))
    # Its real neighbours e1/e2 are forgotten: one edge from the oldest remembered, nothing
    # retracted, and the event itself is not remembered (it is older than the window).
    assert late == [Member("old", "e1"), Edge("session:s", "session", "e3", "old", us(30))]
    assert state.events_of_key("session:s") == [(us(30), "e3"), (us(40), "e4"), (us(50), "e5")]
    # Inside the window placement stays exact.
    _, inside = step(state, ev("mid", 35, "session:s"), BASE + timedelta(seconds=50))
    assert inside[1:] == [
        EdgeRemoved("session:s", "session", "e4", "e3", us(40)),
        Edge("session:s", "session", "mid", "e3", us(35)),
        Edge("session:s", "session", "e4", "mid", us(40)),
    ]
    assert state.events_of_key("session:s") == [(us(35), "mid"), (us(40), "e4"), (us(50), "e5")]


def test_a_replayed_chain_head_forgotten_by_its_keys_rejoins_its_chain() -> None:
    config = CorrelationConfig(max_per_key=1, ttls={"commit": None})
    state, _ = run([ev("head", 0, "commit:c"), ev("next", 1, "commit:c")], config=config)
    assert state.events_of_key("commit:c") == [(us(1), "next")]
    _, out = step(state, ev("head", 0, "commit:c"), BASE + timedelta(seconds=1))
    assert out[0] == Member("head", "head")
    assert state.chain_of_key("commit:c") == "head"
    assert not [a for a in out if isinstance(a, Alias)]


def test_state_round_trips_and_rejects_garbage() -> None:
    state, _ = run(
        [ev("a", 0, "commit:c", "session:s:1"), ev("b", 5, "session:s:1"), ev("z", -5, "commit:c")]
    )
    blob = encode_state(state)
    restored = decode_state(blob, NO_EXPIRY)

    assert restored.snapshot() == state.snapshot()
    assert restored.snapshot()["keys"]["session:s:1"]["chain"] == "z"
    assert (restored.keys, restored.heads, restored.parent) == (state.keys, state.heads, state.parent)
    assert state.parent == {"a": "z"}  # exact: the union-find is kept as it is
    with pytest.raises(ValueError, match="not a correlation state"):
        decode_state(b"\x00garbage")
    cyclic = msgspec.msgpack.encode([1, 0, 0, [], {}, {"a": "b", "b": "a"}])
    with pytest.raises(ValueError, match="alias cycle"):
        decode_state(cyclic)
    unsorted = msgspec.msgpack.encode(
        [1, 0, 0, [["k:1", "a", array("q", [9, 2, 1]).tobytes(), ["a", "b"]]], {"a": 1}, {}]
    )
    with pytest.raises(ValueError, match="events of key"):
        decode_state(unsorted)
    orphan = msgspec.msgpack.encode(
        [1, 0, 0, [["k:1", "x", array("q", [9, 1]).tobytes(), ["a"]]], {"a": 1}, {}]
    )
    with pytest.raises(ValueError, match="unknown"):
        decode_state(orphan)
    bad_version = bytearray(blob)
    bad_version[1] = 2  # [version, ...]: fixarray header, then the version
    with pytest.raises(ValueError, match="version 2"):
        decode_state(bytes(bad_version))


def test_emissions_encode_as_tagged_json_and_back() -> None:
    emitted = [
        Member("e", "c"),
        Alias("c", "b"),
        Edge("trace:t", "trace", "e", "d", 1),
        EdgeRemoved("trace:t", "trace", "e", "d", 1),
        Expired("trace:t"),
    ]
    data = encode_emissions(emitted)
    assert data.startswith(b'[{"kind":"member","event_id":"e","chain_id":"c"}')
    assert decode_emissions(data) == emitted


def test_step_takes_now_as_micros_and_step_raw_skips_the_event_struct() -> None:
    a, b = State(), State()
    e = ev("a", 0, "commit:c")
    assert step(a, e, us(0))[1] == step(b, e, BASE)[1] == [Member("a", "a")]
    assert step_raw(State(), "a", us(0), ("commit:c",), us(0)) == [Member("a", "a")]
    assert encode_state(a) == encode_state(b)


def test_actor_and_target_never_join_chains() -> None:
    bob = Actor(id="bob@acme.io", kind="human", assurance="mfa")
    db = Target(kind="database", id="orders", environment="prod")
    events = [ev(f"e{i}", i, f"session:pg:{i}", actor=bob, target=db) for i in range(5)] + [
        ev("x", 9, actor=bob, target=db)
    ]
    _, out = run(events)
    assert view(out).chains() == {e.id: e.id for e in events}


def test_config_defaults_and_validation() -> None:
    config = CorrelationConfig(ttls={"session": timedelta(hours=1)})
    assert config.ttls["session"] == timedelta(hours=1)
    assert config.ttls["trace"] == DEFAULT_TTLS["trace"] == timedelta(hours=24)
    assert config.ttl_of("commit:abc") is None and config.ttl_of("change:r#1") is None
    assert config.ttl_of("deploy:x") == 30 * 24 * 3600 * 1_000_000
    assert config.ttl_of("weird:x") == 24 * 3600 * 1_000_000  # default_ttl for unknown types
    assert key_type("session:postgres:1") == "session" and key_type("nocolon") == "nocolon"
    with pytest.raises(ValueError, match="positive"):
        CorrelationConfig(ttls={"session": timedelta(0)})
    with pytest.raises(ValueError, match="max_per_key"):
        CorrelationConfig(max_per_key=0)


def test_a_replayed_merged_head_whose_keys_expired_rejoins_the_winning_chain() -> None:
    config = CorrelationConfig(ttls={"session": timedelta(seconds=10)})
    state, out = run(
        [ev("h", 0, "session:s"), ev("g", -5, "commit:c"), ev("x", 1, "session:s", "commit:c")], config=config
    )
    assert Alias("h", "g") in out
    # The session key is dead by now; only the chain's commit key is live, and it never saw h.
    _, again = step(state, ev("h", 0, "session:s"), BASE + timedelta(seconds=30))
    assert again == [Expired("session:s"), Member("h", "g")]
    assert state.chain_of_key("session:s") == "g"
    assert "h" not in state.heads
