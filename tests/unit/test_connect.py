"""The public connector API (pipeline.connect) without Kafka: helpers, the run contract with the
in-memory sink (chunks commit the cursor, bad records go to the DLQ with their origin, a rerun
resumes, --follow stops on request), loading connectors, and `causelog ingest plugin` errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline import connect as c
from pipeline.cli.ingest_plugin import load_spec
from pipeline.cli.main import cli
from pipeline.errors import ConfigError, DecodeError

SHA = "9FCEB02D0AE598E95DC970B74767F19372D61AF8"


def test_public_names_exist_and_are_documented() -> None:
    for name in c.__all__:
        obj = getattr(c, name)
        assert obj is not None, name
        if callable(obj) and not isinstance(obj, type) and name[0].islower():
            assert obj.__doc__, f"{name} has no docstring"
    assert c.API_VERSION.split(".")[0] == "1"


def test_links() -> None:
    assert c.commit_link(SHA) == f"commit:{SHA.lower()}"
    assert c.commit_link("main") is None and c.commit_link(None) is None
    assert c.deploy_link("argocd", "ns/api", 7) == "deploy:argocd:ns/api:7"
    assert c.deploy_link("argocd", None) is None and c.deploy_link("has space") is None
    assert c.change_link("acme/api", 42) == "change:acme/api#42" and c.change_link("acme/api", None) is None
    assert c.session_link("vault", "s.abc") == "session:vault:s.abc"
    assert c.trace_link("4BF92F3577B34DA6A3CE929D0E0E4736") == "trace:4bf92f3577b34da6a3ce929d0e0e4736"
    assert c.trace_link("0" * 32) is None and c.trace_link("xyz") is None
    assert c.traceparent_link("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "trace:4bf92f3577b34da6a3ce929d0e0e4736")
    assert c.traceparent_link("junk") is None
    assert c.request_link("pgtx", "pg1", 77) == "request:pgtx:pg1:77"


def test_actor_assurance_and_unknown() -> None:
    a = c.actor("erin@acme.io", assurance="mfa")
    assert (a.kind, a.principal, a.verified) == ("human", "erin@acme.io", True)
    assert not c.actor("bot", kind="service").verified
    assert c.actor(None) == c.Actor(id="unknown", kind="unknown", assurance="none")


@pytest.mark.parametrize(("value", "micros"), [
    ("2026-11-27T02:14:00.123456789Z", 1795745640123456),
    ("2026-11-27T03:14:00.5+01:00", 1795745640500000),
    ("2026-11-27 02:14:00", 1795745640000000),
    (1795745640, 1795745640000000),
    (1795745640123, 1795745640123000),
    (datetime(2026, 11, 27, 2, 14, tzinfo=UTC), 1795745640000000),
])
def test_parse_time_gives_utc_microseconds(value: Any, micros: int) -> None:
    t = c.parse_time(value)
    assert t.tzinfo is not None and c.to_micros(t) == micros


@pytest.mark.parametrize("value", [None, "", "yesterday", True, "1900-01-01T00:00:00Z", datetime(2026, 1, 1)])
def test_parse_time_rejects_naming_the_field(value: Any) -> None:
    with pytest.raises(DecodeError) as info:
        c.parse_time(value, field="$.finished")
    assert info.value.field == "$.finished"


def _event(**over: Any) -> c.Event:
    fields: dict[str, Any] = dict(source="deploybot", identity=["d-1"], type="deploy.succeeded",
                                  time="2026-11-27T01:24:47Z", actor=c.actor("dave"),
                                  target=c.target("service", "api"), action="deploy", outcome="success",
                                  links=[c.commit_link(SHA), None, c.commit_link(SHA)])
    fields.update(over)
    return c.envelope(**fields)


def test_envelope_is_validated_and_deterministic() -> None:
    e = _event()
    assert e.id == c.event_id("deploybot", "d-1") == _event().id
    assert e.links == (f"commit:{SHA.lower()}",)
    with pytest.raises(DecodeError) as info:
        _event(type="Deploy Succeeded")
    assert info.value.field == "$.type"
    with pytest.raises(ValueError, match="identity"):
        _event(identity=None)
    d = c.diff({"password": "a-long-old-secret", "n": 1}, {"password": "a-long-new-secret", "n": 2})
    assert d["changed"] == ["n", "password"] and "a-long-new-secret" not in str(_event(diff=d).diff)


# -- running -----------------------------------------------------------------------------------


class Numbers:
    """A connector over the integers 1..n; ``bad`` ones make to_events fail in different ways."""

    name = "numbers"

    def __init__(self, n: int = 10, bad: dict[int, str] | None = None, instance: str = "test") -> None:
        self.n, self.bad, self.instance = n, bad or {}, instance
        self.cursors: list[Any] = []

    def fetch(self, cursor: int | None) -> Iterator[c.Record]:
        self.cursors.append(cursor)
        for i in range((cursor or 0) + 1, self.n + 1):
            yield c.record({"i": i}, cursor=i, origin=f"n#{i}")

    def to_events(self, rec: c.Record) -> list[c.Event]:
        i = rec.payload["i"]
        how = self.bad.get(i)
        if how == "reject":
            raise c.reject("invalid_value", "odd one out", field="$.i", value=i)
        if how == "bug":
            return rec.payload["missing"]  # type: ignore[no-any-return]
        if how == "not-event":
            return [{"id": i}]  # type: ignore[list-item]
        return [_event(identity=[i], scope="theirs")]


def test_chunks_commit_the_cursor_with_their_events() -> None:
    sink = c.MemorySink()
    report = c.run_connector(Numbers(1234), sink=sink, progress=False, chunk_records=500, chunk_seconds=3600)
    assert (report.records, report.events, report.rejected, report.commits) == (1234, 1234, 0, 3)
    assert sink.cursors == [500, 1000, 1234] and sink.pending == []


def test_bad_records_go_to_the_dlq_with_origin_and_reason_and_the_run_goes_on() -> None:
    sink = c.MemorySink()
    report = c.run_connector(Numbers(5, {2: "reject", 3: "bug", 4: "not-event"}), sink=sink, progress=False)
    assert (report.records, report.events, report.rejected) == (5, 2, 3)
    assert report.reasons == {"invalid_value": 1, "conversion_failed": 2}
    origins = {h["origin"]: h for _, h in sink.dlq}
    assert set(origins) == {"numbers:n#2", "numbers:n#3", "numbers:n#4"}
    assert "KeyError" in origins["numbers:n#3"]["error"] and origins["numbers:n#2"]["field"] == "$.i"
    assert [v for v, _ in sink.dlq][0] == b'{"i":2}'


def test_a_rerun_resumes_after_the_committed_cursor_and_scope_is_the_operators() -> None:
    sink = c.MemorySink()
    c.run_connector(Numbers(3), sink=sink, progress=False, scope="acme")
    again = Numbers(5)
    report = c.run_connector(again, sink=sink, progress=False)
    assert again.cursors == [3] and report.records == 2
    assert [e.scope for e in sink.events] == ["acme"] * 3 + ["theirs"] * 2


def test_follow_polls_until_stopped() -> None:
    sink, stop = c.MemorySink(), threading.Event()
    conn = Numbers(3)
    chunks: list[int] = []

    def on_chunk(r: c.Report) -> None:
        chunks.append(r.records)

    timer = threading.Timer(0.5, stop.set)
    timer.start()
    report = c.run_connector(conn, sink=sink, follow=True, interval=0.05, stop=stop, progress=False,
                             on_chunk=on_chunk)
    timer.join()
    assert report.records == 3 and len(conn.cursors) >= 3
    assert conn.cursors[0] is None and set(conn.cursors[1:]) == {3}  # later polls start after the last record
    assert chunks[:3] == [1, 2, 3]


def test_as_connector() -> None:
    made = c.as_connector(Numbers, {"n": "3", "instance": "x"})
    assert isinstance(made, Numbers) and made.n == "3"
    assert isinstance(made, c.Connector)
    inst = Numbers()
    assert c.as_connector(inst) is inst
    with pytest.raises(ConfigError, match="instance, not a factory"):
        c.as_connector(inst, {"n": "1"})
    with pytest.raises(ConfigError, match="cannot make the connector"):
        c.as_connector(Numbers, {"colour": "red"})

    class Half:
        name = "half"

        def fetch(self, cursor: Any) -> list[Any]:
            return []

    with pytest.raises(ConfigError, match="lacks instance, to_events"):
        c.as_connector(Half)
    with pytest.raises(ConfigError, match="neither a connector"):
        c.as_connector(42)


def test_load_spec() -> None:
    assert load_spec("pipeline.connect:MemorySink") is c.MemorySink
    with pytest.raises(ConfigError, match="cannot import connector module 'no_such_mod'"):
        load_spec("no_such_mod:X")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        load_spec("pipeline.connect:Nope")
    with pytest.raises(ConfigError, match="no connector 'no-such-entry-point'"):
        load_spec("no-such-entry-point")


def test_plugin_cli_errors_are_one_line() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", "plugin", "no_such_mod:X"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = runner.invoke(cli, ["ingest", "plugin", "pipeline.connect:MemorySink", "-o", "novalue"])
    assert result.exit_code == 2 and "is not KEY=VALUE" in result.output
    result = runner.invoke(cli, ["ingest", "plugin", "--list"])
    assert result.exit_code == 0


class Flaky(Numbers):
    """fetch fails (like an API outage) on the calls listed in ``fail_on``, after yielding 2 records."""

    def __init__(self, n: int, fail_on: set[int]) -> None:
        super().__init__(n)
        self.fail_on = fail_on

    def fetch(self, cursor: int | None) -> Iterator[c.Record]:
        call = len(self.cursors)
        for k, rec in enumerate(super().fetch(cursor)):
            if call in self.fail_on and k == 2:
                raise OSError("connection reset by peer")
            yield rec


def test_a_fetch_failure_is_a_source_error_and_the_open_chunk_is_dropped() -> None:
    sink = c.MemorySink()
    with pytest.raises(c.SourceError, match=r"numbers: fetch from cursor null failed: OSError: connection reset"):
        c.run_connector(Flaky(5, {0}), sink=sink, progress=False, chunk_seconds=3600)
    assert sink.events == [] and sink.pending == [] and sink.cursors == []


def test_a_follower_retries_a_failed_fetch_from_the_committed_cursor() -> None:
    sink, stop = c.MemorySink(), threading.Event()
    conn = Flaky(5, {0})
    timer = threading.Timer(0.6, stop.set)
    timer.start()
    report = c.run_connector(conn, sink=sink, follow=True, interval=0.05, stop=stop, progress=False,
                             chunk_seconds=3600)
    timer.join()
    assert conn.cursors[:3] == [None, None, 5]  # failed pass, retry from nothing committed, then polls
    assert report.records == 5 and sink.cursors[-1] == 5
    assert len({e.id for e in sink.events}) == 5


def test_public_api_surface_is_stable() -> None:
    """The names of API_VERSION 1: removing or renaming one is a major (incompatible) change."""
    assert set(c.__all__) >= {
        "API_VERSION", "Actor", "Assurance", "Connector", "DecodeError", "Event", "MemorySink", "Outcome",
        "Record", "Report", "SourceError", "Target", "actor", "as_connector", "change_link", "commit_link",
        "deploy_link", "diff", "envelope", "event_id", "parse_time", "record", "redact", "reject",
        "request_link", "run_connector", "session_link", "target", "to_micros", "trace_link", "traceparent_link",
    }
    import inspect

    params = inspect.signature(c.run_connector).parameters
    assert list(params)[0] == "connector"
    assert {"settings", "follow", "interval", "scope", "stop", "progress", "sink"} <= set(params)
    assert all(p.kind is p.KEYWORD_ONLY for name, p in params.items() if name != "connector")
