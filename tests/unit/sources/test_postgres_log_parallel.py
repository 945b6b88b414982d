"""Parallel workers in PostgreSQL logs: a worker's records belong to its leader's session.

The samples are verbatim from a real PostgreSQL 15 + pgaudit 1.7 server (csvlog and jsonlog of the
same records), made with tests/integration/pg_fixture.py: alice runs the heavy aggregate of
tests/integration/test_incident_0214.py (one parallel worker, pid 24704, leader 24703), then a
parallel query that fails in its workers (pids 24707 and 24708, leader 24706), which logs the
workers' own ERROR, the leader's ERROR (CONTEXT: parallel worker) and the FATAL of the worker the
leader terminated.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.model import Event, decode, encode
from pipeline.sources import postgres_log as pg

CSVLOG = r"""2026-11-28 00:00:39.244 UTC,,,24703,"127.0.0.1:53872",6b0a19a7.607f,1,"",2026-11-28 00:00:39 UTC,,0,LOG,00000,"connection received: host=127.0.0.1 port=53872",,,,,,,,,"","not initialized",,0
2026-11-28 00:00:39.245 UTC,"alice","postgres",24703,"127.0.0.1:53872",6b0a19a7.607f,2,"authentication",2026-11-28 00:00:39 UTC,3/11,0,LOG,00000,"connection authorized: user=alice database=postgres application_name=psql-reporting",,,,,,,,,"","client backend",,0
2026-11-28 00:00:39.248 UTC,"alice","postgres",24703,"127.0.0.1:53872",6b0a19a7.607f,3,"SELECT",2026-11-28 00:00:39 UTC,3/12,0,LOG,00000,"AUDIT: SESSION,1,1,READ,SELECT,,,""SELECT customer_id, count(*) AS n, sum(amount) AS total FROM orders CROSS JOIN generate_series(1, 25) AS copies GROUP BY customer_id ORDER BY total DESC LIMIT 10;"",<not logged>",,,,,,,,,"psql-reporting","client backend",,0
2026-11-28 00:00:39.253 UTC,,,24704,,6b0a19a7.6080,1,,2026-11-28 00:00:39 UTC,4/3,0,LOG,00000,"AUDIT: SESSION,1,1,READ,SELECT,,,""SELECT customer_id, count(*) AS n, sum(amount) AS total FROM orders CROSS JOIN generate_series(1, 25) AS copies GROUP BY customer_id ORDER BY total DESC LIMIT 10;"",<not logged>",,,,,,,,,"psql-reporting","parallel worker",24703,0
2026-11-28 00:00:40.035 UTC,"alice","postgres",24703,"127.0.0.1:53872",6b0a19a7.607f,4,"idle",2026-11-28 00:00:39 UTC,,0,LOG,00000,"disconnection: session time: 0:00:00.791 user=alice database=postgres host=127.0.0.1 port=53872",,,,,,,,,"psql-reporting","client backend",,0
2026-11-28 00:00:40.089 UTC,,,24706,"127.0.0.1:53880",6b0a19a8.6082,1,"",2026-11-28 00:00:40 UTC,,0,LOG,00000,"connection received: host=127.0.0.1 port=53880",,,,,,,,,"","not initialized",,0
2026-11-28 00:00:40.090 UTC,"alice","postgres",24706,"127.0.0.1:53880",6b0a19a8.6082,2,"authentication",2026-11-28 00:00:40 UTC,3/13,0,LOG,00000,"connection authorized: user=alice database=postgres application_name=psql-err",,,,,,,,,"","client backend",,0
2026-11-28 00:00:40.093 UTC,"alice","postgres",24706,"127.0.0.1:53880",6b0a19a8.6082,3,"SELECT",2026-11-28 00:00:40 UTC,3/17,0,LOG,00000,"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;,<not logged>",,,,,,,,,"psql-err","client backend",,0
2026-11-28 00:00:40.098 UTC,,,24707,,6b0a19a8.6083,1,,2026-11-28 00:00:40 UTC,4/6,0,LOG,00000,"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;,<not logged>",,,,,,,,,"psql-err","parallel worker",24706,0
2026-11-28 00:00:40.104 UTC,,,24707,,6b0a19a8.6083,2,,2026-11-28 00:00:40 UTC,4/6,0,ERROR,22012,"division by zero",,,,,,"SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;",,,"psql-err","parallel worker",24706,0
2026-11-28 00:00:40.105 UTC,,,24708,,6b0a19a8.6084,1,,2026-11-28 00:00:40 UTC,5/3,0,LOG,00000,"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;,<not logged>",,,,,,,,,"psql-err","parallel worker",24706,0
2026-11-28 00:00:40.107 UTC,"alice","postgres",24706,"127.0.0.1:53880",6b0a19a8.6082,4,"SELECT",2026-11-28 00:00:40 UTC,3/17,0,ERROR,22012,"division by zero",,,,,"parallel worker","SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;",,,"psql-err","client backend",,0
2026-11-28 00:00:40.107 UTC,,,24708,,6b0a19a8.6084,2,,2026-11-28 00:00:40 UTC,5/3,0,FATAL,57P01,"terminating background worker ""parallel worker"" due to administrator command",,,,,,"SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;",,,"psql-err","parallel worker",24706,0
2026-11-28 00:00:40.107 UTC,,,24685,,6b0a19a6.606d,5,,2026-11-28 00:00:38 UTC,,0,LOG,00000,"background worker ""parallel worker"" (PID 24707) exited with exit code 1",,,,,,,,,"","postmaster",,0
2026-11-28 00:00:40.110 UTC,,,24685,,6b0a19a6.606d,6,,2026-11-28 00:00:38 UTC,,0,LOG,00000,"background worker ""parallel worker"" (PID 24708) exited with exit code 1",,,,,,,,,"","postmaster",,0
2026-11-28 00:00:40.110 UTC,"alice","postgres",24706,"127.0.0.1:53880",6b0a19a8.6082,5,"idle",2026-11-28 00:00:40 UTC,,0,LOG,00000,"disconnection: session time: 0:00:00.021 user=alice database=postgres host=127.0.0.1 port=53880",,,,,,,,,"psql-err","client backend",,0
"""

JSONLOG = r"""{"timestamp":"2026-11-28 00:00:39.244 UTC","pid":24703,"remote_host":"127.0.0.1","remote_port":53872,"session_id":"6b0a19a7.607f","line_num":1,"ps":"","session_start":"2026-11-28 00:00:39 UTC","txid":0,"error_severity":"LOG","message":"connection received: host=127.0.0.1 port=53872","backend_type":"not initialized","query_id":0}
{"timestamp":"2026-11-28 00:00:39.245 UTC","user":"alice","dbname":"postgres","pid":24703,"remote_host":"127.0.0.1","remote_port":53872,"session_id":"6b0a19a7.607f","line_num":2,"ps":"authentication","session_start":"2026-11-28 00:00:39 UTC","vxid":"3/11","txid":0,"error_severity":"LOG","message":"connection authorized: user=alice database=postgres application_name=psql-reporting","backend_type":"client backend","query_id":0}
{"timestamp":"2026-11-28 00:00:39.248 UTC","user":"alice","dbname":"postgres","pid":24703,"remote_host":"127.0.0.1","remote_port":53872,"session_id":"6b0a19a7.607f","line_num":3,"ps":"SELECT","session_start":"2026-11-28 00:00:39 UTC","vxid":"3/12","txid":0,"error_severity":"LOG","message":"AUDIT: SESSION,1,1,READ,SELECT,,,\"SELECT customer_id, count(*) AS n, sum(amount) AS total FROM orders CROSS JOIN generate_series(1, 25) AS copies GROUP BY customer_id ORDER BY total DESC LIMIT 10;\",<not logged>","application_name":"psql-reporting","backend_type":"client backend","query_id":0}
{"timestamp":"2026-11-28 00:00:39.253 UTC","pid":24704,"session_id":"6b0a19a7.6080","line_num":1,"session_start":"2026-11-28 00:00:39 UTC","vxid":"4/3","txid":0,"error_severity":"LOG","message":"AUDIT: SESSION,1,1,READ,SELECT,,,\"SELECT customer_id, count(*) AS n, sum(amount) AS total FROM orders CROSS JOIN generate_series(1, 25) AS copies GROUP BY customer_id ORDER BY total DESC LIMIT 10;\",<not logged>","application_name":"psql-reporting","backend_type":"parallel worker","leader_pid":24703,"query_id":0}
{"timestamp":"2026-11-28 00:00:40.035 UTC","user":"alice","dbname":"postgres","pid":24703,"remote_host":"127.0.0.1","remote_port":53872,"session_id":"6b0a19a7.607f","line_num":4,"ps":"idle","session_start":"2026-11-28 00:00:39 UTC","txid":0,"error_severity":"LOG","message":"disconnection: session time: 0:00:00.791 user=alice database=postgres host=127.0.0.1 port=53872","application_name":"psql-reporting","backend_type":"client backend","query_id":0}
{"timestamp":"2026-11-28 00:00:40.089 UTC","pid":24706,"remote_host":"127.0.0.1","remote_port":53880,"session_id":"6b0a19a8.6082","line_num":1,"ps":"","session_start":"2026-11-28 00:00:40 UTC","txid":0,"error_severity":"LOG","message":"connection received: host=127.0.0.1 port=53880","backend_type":"not initialized","query_id":0}
{"timestamp":"2026-11-28 00:00:40.090 UTC","user":"alice","dbname":"postgres","pid":24706,"remote_host":"127.0.0.1","remote_port":53880,"session_id":"6b0a19a8.6082","line_num":2,"ps":"authentication","session_start":"2026-11-28 00:00:40 UTC","vxid":"3/13","txid":0,"error_severity":"LOG","message":"connection authorized: user=alice database=postgres application_name=psql-err","backend_type":"client backend","query_id":0}
{"timestamp":"2026-11-28 00:00:40.093 UTC","user":"alice","dbname":"postgres","pid":24706,"remote_host":"127.0.0.1","remote_port":53880,"session_id":"6b0a19a8.6082","line_num":3,"ps":"SELECT","session_start":"2026-11-28 00:00:40 UTC","vxid":"3/17","txid":0,"error_severity":"LOG","message":"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;,<not logged>","application_name":"psql-err","backend_type":"client backend","query_id":0}
{"timestamp":"2026-11-28 00:00:40.098 UTC","pid":24707,"session_id":"6b0a19a8.6083","line_num":1,"session_start":"2026-11-28 00:00:40 UTC","vxid":"4/6","txid":0,"error_severity":"LOG","message":"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;,<not logged>","application_name":"psql-err","backend_type":"parallel worker","leader_pid":24706,"query_id":0}
{"timestamp":"2026-11-28 00:00:40.104 UTC","pid":24707,"session_id":"6b0a19a8.6083","line_num":2,"session_start":"2026-11-28 00:00:40 UTC","vxid":"4/6","txid":0,"error_severity":"ERROR","state_code":"22012","message":"division by zero","statement":"SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;","application_name":"psql-err","backend_type":"parallel worker","leader_pid":24706,"query_id":0}
{"timestamp":"2026-11-28 00:00:40.105 UTC","pid":24708,"session_id":"6b0a19a8.6084","line_num":1,"session_start":"2026-11-28 00:00:40 UTC","vxid":"5/3","txid":0,"error_severity":"LOG","message":"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;,<not logged>","application_name":"psql-err","backend_type":"parallel worker","leader_pid":24706,"query_id":0}
{"timestamp":"2026-11-28 00:00:40.107 UTC","user":"alice","dbname":"postgres","pid":24706,"remote_host":"127.0.0.1","remote_port":53880,"session_id":"6b0a19a8.6082","line_num":4,"ps":"SELECT","session_start":"2026-11-28 00:00:40 UTC","vxid":"3/17","txid":0,"error_severity":"ERROR","state_code":"22012","message":"division by zero","context":"parallel worker","statement":"SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;","application_name":"psql-err","backend_type":"client backend","query_id":0}
{"timestamp":"2026-11-28 00:00:40.107 UTC","pid":24708,"session_id":"6b0a19a8.6084","line_num":2,"session_start":"2026-11-28 00:00:40 UTC","vxid":"5/3","txid":0,"error_severity":"FATAL","state_code":"57P01","message":"terminating background worker \"parallel worker\" due to administrator command","statement":"SELECT count(*) FROM orders WHERE 1/(id-150000) > 5;","application_name":"psql-err","backend_type":"parallel worker","leader_pid":24706,"query_id":0}
{"timestamp":"2026-11-28 00:00:40.107 UTC","pid":24685,"session_id":"6b0a19a6.606d","line_num":5,"session_start":"2026-11-28 00:00:38 UTC","txid":0,"error_severity":"LOG","message":"background worker \"parallel worker\" (PID 24707) exited with exit code 1","backend_type":"postmaster","query_id":0}
{"timestamp":"2026-11-28 00:00:40.110 UTC","pid":24685,"session_id":"6b0a19a6.606d","line_num":6,"session_start":"2026-11-28 00:00:38 UTC","txid":0,"error_severity":"LOG","message":"background worker \"parallel worker\" (PID 24708) exited with exit code 1","backend_type":"postmaster","query_id":0}
{"timestamp":"2026-11-28 00:00:40.110 UTC","user":"alice","dbname":"postgres","pid":24706,"remote_host":"127.0.0.1","remote_port":53880,"session_id":"6b0a19a8.6082","line_num":5,"ps":"idle","session_start":"2026-11-28 00:00:40 UTC","txid":0,"error_severity":"LOG","message":"disconnection: session time: 0:00:00.021 user=alice database=postgres host=127.0.0.1 port=53880","application_name":"psql-err","backend_type":"client backend","query_id":0}
"""

HEAVY = "SELECT customer_id, count(*)"
ALICE_HEAVY = "6b0a19a7.607f"  # alice's first session (leader pid 24703)
ALICE_ERR = "6b0a19a8.6082"  # alice's second session (leader pid 24706)
SAMPLES = {"csvlog": (CSVLOG, "pg.csv"), "jsonlog": (JSONLOG, "pg.json")}


def _file(tmp_path: Path, fmt: str, text: str | None = None) -> Path:
    sample, name = SAMPLES[fmt]
    f = tmp_path / name
    f.write_text(sample if text is None else text, encoding="utf-8")
    return f


def _map(records: list[pg.LogRecord], stats: Counter[str] | None = None) -> list[tuple[pg.LogRecord, Event]]:
    out = []
    for r in records:
        for e in pg.to_events(r, scope="acme", server="db", stats=stats):
            assert decode(encode(e)) == e
            out.append((r, e))
    return out


def _sessions(e: Event) -> list[str]:
    return [str(k) for k in e.links if str(k).startswith("session:")]


def _normalized(e: Event) -> str:
    return str(((e.raw or {}).get("statement") or {}).get("normalized") or "")


def _drain(f: Path, cursor: Any = None, stats: Counter[str] | None = None) -> tuple[list[pg.LogRecord], Any]:
    out = []
    for record, after in pg.fetch_log(f, cursor, stats=stats):
        out.append(record)
        cursor = after
    return out, cursor


def test_the_samples_are_what_the_bug_is_about() -> None:
    for fmt, (text, _) in SAMPLES.items():
        records = list(pg.parse(text, format=fmt))
        assert len(records) == 16, fmt
        workers = [r for r in records if r.backend_type == "parallel worker"]
        assert [(r.pid, r.leader_pid, r.user, r.database) for r in workers] == [
            (24704, 24703, None, None),
            (24707, 24706, None, None),
            (24707, 24706, None, None),
            (24708, 24706, None, None),
            (24708, 24706, None, None),
        ], fmt
        assert all(r.session_id not in (ALICE_HEAVY, ALICE_ERR) for r in workers)
        # the bug: mapped record by record, the worker's pgaudit line was a second query by
        # nobody in a session of its own; to_events alone now counts it as a repeat
        stats: Counter[str] = Counter()
        assert pg.to_events(workers[0], scope="acme", server="db", stats=stats) == []
        assert stats["parallel_worker_repeats"] == 1


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_a_workers_pgaudit_line_is_counted_not_a_second_query(tmp_path: Path, fmt: str) -> None:
    stats: Counter[str] = Counter()
    records, cursor = _drain(_file(tmp_path, fmt), stats=stats)
    # three worker pgaudit lines (one for the heavy query, two for the failing one): not records
    # of the read, each counted (the ingest's summary prints the stats that are not records)
    assert stats["parallel_worker_repeats"] == 3 and "parallel_worker_repeats_unverified" not in stats
    assert stats["records"] == 16 and len(records) == 13
    assert not [r for r in records if r.message.startswith("AUDIT: ") and r.backend_type == "parallel worker"]
    pairs = _map(records)
    heavy = [e for _, e in pairs if e.type == "db.query" and _normalized(e).startswith(HEAVY)]
    assert [(e.actor.id, _sessions(e)) for e in heavy] == [
        ("postgres:db:alice", [f"session:postgres:db:{ALICE_HEAVY}"])
    ]
    assert all(e.actor.id != "postgres:db:unknown" for _, e in pairs)
    # the leaders are in the cursor (JSON), for a resumed read
    assert set(orjson.loads(orjson.dumps(cursor))["leaders"]) >= {"24703", "24706"}


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_a_workers_other_records_carry_the_leaders_session_actor_and_database(
    tmp_path: Path, fmt: str
) -> None:
    records, _ = _drain(_file(tmp_path, fmt))
    pairs = _map(records)
    worker = [(r, e) for r, e in pairs if r.backend_type == "parallel worker"]
    # the worker's ERROR and the FATAL of the worker the leader terminated
    assert [(r.pid, r.severity, e.outcome) for r, e in worker] == [
        (24707, "ERROR", "failure"),
        (24708, "FATAL", "failure"),
    ]
    for r, e in worker:
        # the sample's cluster trusts its clients (no `connection authenticated` line): claimed
        assert e.actor.id == "postgres:db:alice" and e.actor.assurance == "claimed"
        assert _sessions(e) == [f"session:postgres:db:{ALICE_ERR}"]
        assert e.target.id == "db/postgres"  # the leader's database (the worker's line has none)
        raw = e.raw or {}
        # what the worker wrote is kept; what it got from its leader is said
        assert raw["pid"] == r.pid and raw["session_id"] == r.session_id != ALICE_ERR
        assert (raw["leader_pid"], raw["leader_session_id"]) == (24706, ALICE_ERR)
        assert raw["inherited_from_leader"] == ["user", "database", "session_id"]
        assert raw["backend_type"] == "parallel worker"
    # the leader's own ERROR (CONTEXT: parallel worker) is in the same session
    leader_error = [e for r, e in pairs if r.pid == 24706 and r.severity == "ERROR"]
    assert [_sessions(e) for e in leader_error] == [[f"session:postgres:db:{ALICE_ERR}"]]
    # every record keeps an id of its own (the worker's own session id and line number)
    assert len({e.id for _, e in pairs}) == len(pairs)


def test_csvlog_and_jsonlog_give_the_same_events(tmp_path: Path) -> None:
    got = {}
    for fmt in SAMPLES:
        records, _ = _drain(_file(tmp_path, fmt))
        got[fmt] = [(e.id, e.type, e.actor.id, tuple(_sessions(e))) for _, e in _map(records)]
    assert got["csvlog"] == got["jsonlog"] and len(got["csvlog"]) == 9


def test_fetch_records_links_workers_too(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    records = list(pg.fetch_records(_file(tmp_path, "csvlog"), stats=stats))
    assert stats["parallel_worker_repeats"] == 3 and len(records) == 13
    assert {r.leader_session_id for r in records if r.backend_type == "parallel worker"} == {ALICE_ERR}


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_resume_between_the_leaders_record_and_the_workers(tmp_path: Path, fmt: str) -> None:
    f = _file(tmp_path, fmt)
    full, _ = _drain(f)
    expected = [(e.id, e.actor.id, tuple(_sessions(e))) for _, e in _map(full)]
    pairs = list(pg.fetch_log(f, None))
    for i, (_, cursor) in enumerate(pairs):  # resume after every record, the cursor via JSON
        stats: Counter[str] = Counter()
        rest, _ = _drain(f, orjson.loads(orjson.dumps(cursor)), stats=stats)
        got = [(e.id, e.actor.id, tuple(_sessions(e))) for _, e in _map(rest)]
        assert got == expected[len(expected) - len(got) :], f"resumed after record {i}"
        assert "parallel_worker_repeats_unverified" not in stats
    # right after alice's heavy statement, before its worker's pgaudit line: the leader comes from
    # the cursor and the worker's line is a verified repeat
    at = next(c for r, c in pairs if r.pid == 24703 and r.message.startswith("AUDIT: "))
    stats = Counter()
    rest, _ = _drain(f, at, stats=stats)
    assert stats["parallel_worker_repeats"] == 3
    assert not [r for r in rest if r.pid == 24703 and r.message.startswith("AUDIT: ")]


def test_resume_without_the_leader_falls_back_without_inventing_a_session(tmp_path: Path) -> None:
    """The documented fallback: the leader's records are before where the read starts and not in
    the cursor (a cursor of an older version, or a leader not active for long)."""
    f = _file(tmp_path, "csvlog")
    pairs = list(pg.fetch_log(f, None))
    at = next(c for r, c in pairs if r.pid == 24706 and r.message.startswith("AUDIT: "))
    at = {k: v for k, v in at.items() if k != "leaders"}
    stats: Counter[str] = Counter()
    rest, _ = _drain(f, at, stats=stats)
    # pgaudit lines of workers still make no query: their leader logged the line first
    assert stats["parallel_worker_repeats_unverified"] == 2 and "parallel_worker_repeats" not in stats
    worker = [(r, e) for r, e in _map(rest) if r.backend_type == "parallel worker"]
    assert [(r.pid, r.severity) for r, _ in worker] == [(24707, "ERROR"), (24708, "FATAL")]
    (r, e) = worker[0]  # logged before any record of its leader in this read
    # no session of its own (a worker's session id is no client session), the leader in raw
    assert _sessions(e) == [] and (e.raw or {})["leader_pid"] == 24706
    assert r.leader_session_id is None and "leader_session_id" not in (e.raw or {})
    assert e.actor.id == "postgres:db:unknown"  # the line names no role and the leader is not known
    # the leader's next record (its ERROR) teaches it again: the other worker's FATAL after it
    # is the leader's session's, as are the leader's ERROR and disconnection
    assert _sessions(worker[1][1]) == [f"session:postgres:db:{ALICE_ERR}"]
    assert worker[1][1].actor.id == "postgres:db:alice"
    leader = [e for r, e in _map(rest) if r.pid == 24706]
    assert {s for e in leader for s in _sessions(e)} == {f"session:postgres:db:{ALICE_ERR}"}


def test_a_reused_leader_pid_is_a_new_session() -> None:
    text = CSVLOG.splitlines(keepends=True)
    rows = list(pg.parse("".join(text), format="csvlog"))
    worker_error = next(r for r in rows if r.backend_type == "parallel worker" and r.severity == "ERROR")
    leaders = pg.ParallelLeaders()
    for r in rows:
        if r.pid == 24706 and r.message.startswith("AUDIT: "):
            leaders.apply(r)
    # pid 24706 later serves bob's session: the worker's records are bob's then
    later = next(r for r in rows if r.pid == 24706 and r.message.startswith("AUDIT: "))
    from dataclasses import replace

    leaders.apply(
        replace(later, session_id="6b0a2000.6082", user="bob", message="connection authorized: user=bob")
    )
    linked = leaders.apply(worker_error)
    assert linked is not None and (linked.user, linked.leader_session_id) == ("bob", "6b0a2000.6082")
    # and its pgaudit lines of the earlier session are forgotten: a worker's line is unverified
    stats: Counter[str] = Counter()
    worker_audit = next(r for r in rows if r.pid == 24707 and r.message.startswith("AUDIT: "))
    assert leaders.apply(worker_audit, stats) is None
    assert stats == {"parallel_worker_repeats_unverified": 1}


def test_leader_state_is_bounded_and_survives_a_bad_cursor() -> None:
    leaders = pg.ParallelLeaders({"1": "not a leader", "x": [1, 2, 3, 4], "2": ["a.2", "u", "d", ["k"]]})
    assert leaders.snapshot() == {"2": ["a.2", "u", "d", ["k"]]}
    (base,) = [
        r for r in pg.parse(CSVLOG, format="csvlog") if r.pid == 24703 and r.message.startswith("AUDIT: ")
    ]
    from dataclasses import replace

    for pid in range(1000, 1200):
        leaders.apply(replace(base, pid=pid, session_id=f"6b0a19a7.{pid:x}"))
    snap = leaders.snapshot()
    assert len(snap) == 64 and "1199" in snap and "2" not in snap
    assert leaders.snapshot() is snap  # unchanged state: the same object (cheap cursors)


def test_a_workers_records_take_their_leaders_authentication(tmp_path: Path) -> None:
    # the same log had the leader's password been checked: PostgreSQL 15 writes this line between
    # `connection received` and `connection authorized` (see test_postgres_log_auth.py)
    lines = CSVLOG.splitlines(keepends=True)
    authenticated = (
        '2026-11-28 00:00:40.090 UTC,"alice","postgres",24706,"127.0.0.1:53880",6b0a19a8.6082,2,"authentication",'
        '2026-11-28 00:00:40 UTC,3/13,0,LOG,00000,"connection authenticated: identity=""alice"" '
        'method=scram-sha-256 (/etc/postgresql/15/main/pg_hba.conf:1)",,,,,,,,,"","client backend",,0\n'
    )
    f = _file(tmp_path, "csvlog", "".join([*lines[:6], authenticated, *lines[6:]]))
    records, _ = _drain(f)
    pairs = _map(records)
    worker = [e for r, e in pairs if r.backend_type == "parallel worker"]
    assert len(worker) == 2
    assert {(e.actor.assurance, (e.raw or {}).get("auth_method")) for e in worker} == {("authenticated", "scram-sha-256")}
    # the other session of alice (pid 24703) stays claimed: nothing vouches for it
    first = [e for r, e in pairs if r.session_id == ALICE_HEAVY]
    assert first and {e.actor.assurance for e in first} == {"claimed"}
