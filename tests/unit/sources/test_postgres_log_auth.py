"""PostgreSQL sessions: `authenticated` only when the log shows the server checked a credential.

The csvlog/jsonlog samples are verbatim from a real PostgreSQL 15 + pgaudit server (made with
tests/integration/pg_fixture.py, pg_hba.conf lines ``host all carol 127.0.0.1/32 scram-sha-256``,
``host all dave 127.0.0.1/32 password`` and ``host all all 127.0.0.1/32 trust``): carol logs in
with SCRAM, dave with a clear-text password, carol once more with a wrong password, and postgres
under trust. PostgreSQL 15 writes ``connection authenticated: identity="..." method=...`` for the
first two and nothing for trust.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.model import Event, decode, encode
from pipeline.sources import postgres_log as pg

CSVLOG = r'''2026-12-03 05:21:13.731 UTC,,,2841,"127.0.0.1:58050",6b10fc49.b19,1,"",2026-12-03 05:21:13 UTC,,0,LOG,00000,"connection received: host=127.0.0.1 port=58050",,,,,,,,,"","not initialized",,0
2026-12-03 05:21:13.736 UTC,"carol","postgres",2841,"127.0.0.1:58050",6b10fc49.b19,2,"authentication",2026-12-03 05:21:13 UTC,3/8,0,LOG,00000,"connection authenticated: identity=""carol"" method=scram-sha-256 (/tmp/causelog-pg-da_adakf/postgres/pg_hba.conf:1)",,,,,,,,,"","client backend",,0
2026-12-03 05:21:13.736 UTC,"carol","postgres",2841,"127.0.0.1:58050",6b10fc49.b19,3,"authentication",2026-12-03 05:21:13 UTC,3/8,0,LOG,00000,"connection authorized: user=carol database=postgres application_name=probe",,,,,,,,,"","client backend",,0
2026-12-03 05:21:13.737 UTC,"carol","postgres",2841,"127.0.0.1:58050",6b10fc49.b19,4,"SELECT",2026-12-03 05:21:13 UTC,3/9,0,LOG,00000,"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT 1,<not logged>",,,,,,,,,"probe","client backend",,0
2026-12-03 05:21:13.738 UTC,"carol","postgres",2841,"127.0.0.1:58050",6b10fc49.b19,5,"idle",2026-12-03 05:21:13 UTC,,0,LOG,00000,"disconnection: session time: 0:00:00.006 user=carol database=postgres host=127.0.0.1 port=58050",,,,,,,,,"probe","client backend",,0
2026-12-03 05:21:13.807 UTC,,,2844,"127.0.0.1:58056",6b10fc49.b1c,1,"",2026-12-03 05:21:13 UTC,,0,LOG,00000,"connection received: host=127.0.0.1 port=58056",,,,,,,,,"","not initialized",,0
2026-12-03 05:21:13.812 UTC,"dave","postgres",2844,"127.0.0.1:58056",6b10fc49.b1c,2,"authentication",2026-12-03 05:21:13 UTC,3/10,0,LOG,00000,"connection authenticated: identity=""dave"" method=password (/tmp/causelog-pg-da_adakf/postgres/pg_hba.conf:2)",,,,,,,,,"","client backend",,0
2026-12-03 05:21:13.812 UTC,"dave","postgres",2844,"127.0.0.1:58056",6b10fc49.b1c,3,"authentication",2026-12-03 05:21:13 UTC,3/10,0,LOG,00000,"connection authorized: user=dave database=postgres application_name=probe",,,,,,,,,"","client backend",,0
2026-12-03 05:21:13.813 UTC,"dave","postgres",2844,"127.0.0.1:58056",6b10fc49.b1c,4,"SELECT",2026-12-03 05:21:13 UTC,3/11,0,LOG,00000,"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT 1,<not logged>",,,,,,,,,"probe","client backend",,0
2026-12-03 05:21:13.829 UTC,"dave","postgres",2844,"127.0.0.1:58056",6b10fc49.b1c,5,"idle",2026-12-03 05:21:13 UTC,,0,LOG,00000,"disconnection: session time: 0:00:00.022 user=dave database=postgres host=127.0.0.1 port=58056",,,,,,,,,"probe","client backend",,0
2026-12-03 05:21:13.871 UTC,,,2850,"127.0.0.1:58084",6b10fc49.b22,1,"",2026-12-03 05:21:13 UTC,,0,LOG,00000,"connection received: host=127.0.0.1 port=58084",,,,,,,,,"","not initialized",,0
2026-12-03 05:21:13.877 UTC,"carol","postgres",2850,"127.0.0.1:58084",6b10fc49.b22,2,"authentication",2026-12-03 05:21:13 UTC,3/14,0,FATAL,28P01,"password authentication failed for user ""carol""","Connection matched pg_hba.conf line 1: ""host all carol 127.0.0.1/32 scram-sha-256""",,,,,,,,"","client backend",,0
2026-12-03 05:21:13.903 UTC,,,2852,"127.0.0.1:58086",6b10fc49.b24,1,"",2026-12-03 05:21:13 UTC,,0,LOG,00000,"connection received: host=127.0.0.1 port=58086",,,,,,,,,"","not initialized",,0
2026-12-03 05:21:13.904 UTC,"postgres","postgres",2852,"127.0.0.1:58086",6b10fc49.b24,2,"authentication",2026-12-03 05:21:13 UTC,3/15,0,LOG,00000,"connection authorized: user=postgres database=postgres application_name=psql",,,,,,,,,"","client backend",,0
2026-12-03 05:21:13.905 UTC,"postgres","postgres",2852,"127.0.0.1:58086",6b10fc49.b24,3,"SELECT",2026-12-03 05:21:13 UTC,3/16,0,LOG,00000,"AUDIT: SESSION,1,1,READ,SELECT,,,""SELECT pg_current_logfile('csvlog'), pg_current_logfile('jsonlog');"",<not logged>",,,,,,,,,"psql","client backend",,0
2026-12-03 05:21:13.906 UTC,"postgres","postgres",2852,"127.0.0.1:58086",6b10fc49.b24,4,"idle",2026-12-03 05:21:13 UTC,,0,LOG,00000,"disconnection: session time: 0:00:00.002 user=postgres database=postgres host=127.0.0.1 port=58086",,,,,,,,,"psql","client backend",,0
'''

JSONLOG = r"""{"timestamp":"2026-12-03 05:21:13.731 UTC","pid":2841,"remote_host":"127.0.0.1","remote_port":58050,"session_id":"6b10fc49.b19","line_num":1,"ps":"","session_start":"2026-12-03 05:21:13 UTC","txid":0,"error_severity":"LOG","message":"connection received: host=127.0.0.1 port=58050","backend_type":"not initialized","query_id":0}
{"timestamp":"2026-12-03 05:21:13.736 UTC","user":"carol","dbname":"postgres","pid":2841,"remote_host":"127.0.0.1","remote_port":58050,"session_id":"6b10fc49.b19","line_num":2,"ps":"authentication","session_start":"2026-12-03 05:21:13 UTC","vxid":"3/8","txid":0,"error_severity":"LOG","message":"connection authenticated: identity=\"carol\" method=scram-sha-256 (/tmp/causelog-pg-da_adakf/postgres/pg_hba.conf:1)","backend_type":"client backend","query_id":0}
{"timestamp":"2026-12-03 05:21:13.736 UTC","user":"carol","dbname":"postgres","pid":2841,"remote_host":"127.0.0.1","remote_port":58050,"session_id":"6b10fc49.b19","line_num":3,"ps":"authentication","session_start":"2026-12-03 05:21:13 UTC","vxid":"3/8","txid":0,"error_severity":"LOG","message":"connection authorized: user=carol database=postgres application_name=probe","backend_type":"client backend","query_id":0}
{"timestamp":"2026-12-03 05:21:13.737 UTC","user":"carol","dbname":"postgres","pid":2841,"remote_host":"127.0.0.1","remote_port":58050,"session_id":"6b10fc49.b19","line_num":4,"ps":"SELECT","session_start":"2026-12-03 05:21:13 UTC","vxid":"3/9","txid":0,"error_severity":"LOG","message":"AUDIT: SESSION,1,1,READ,SELECT,,,SELECT 1,<not logged>","application_name":"probe","backend_type":"client backend","query_id":0}
{"timestamp":"2026-12-03 05:21:13.738 UTC","user":"carol","dbname":"postgres","pid":2841,"remote_host":"127.0.0.1","remote_port":58050,"session_id":"6b10fc49.b19","line_num":5,"ps":"idle","session_start":"2026-12-03 05:21:13 UTC","txid":0,"error_severity":"LOG","message":"disconnection: session time: 0:00:00.006 user=carol database=postgres host=127.0.0.1 port=58050","application_name":"probe","backend_type":"client backend","query_id":0}
{"timestamp":"2026-12-03 05:21:13.903 UTC","pid":2852,"remote_host":"127.0.0.1","remote_port":58086,"session_id":"6b10fc49.b24","line_num":1,"ps":"","session_start":"2026-12-03 05:21:13 UTC","txid":0,"error_severity":"LOG","message":"connection received: host=127.0.0.1 port=58086","backend_type":"not initialized","query_id":0}
{"timestamp":"2026-12-03 05:21:13.904 UTC","user":"postgres","dbname":"postgres","pid":2852,"remote_host":"127.0.0.1","remote_port":58086,"session_id":"6b10fc49.b24","line_num":2,"ps":"authentication","session_start":"2026-12-03 05:21:13 UTC","vxid":"3/15","txid":0,"error_severity":"LOG","message":"connection authorized: user=postgres database=postgres application_name=psql","backend_type":"client backend","query_id":0}
{"timestamp":"2026-12-03 05:21:13.905 UTC","user":"postgres","dbname":"postgres","pid":2852,"remote_host":"127.0.0.1","remote_port":58086,"session_id":"6b10fc49.b24","line_num":3,"ps":"SELECT","session_start":"2026-12-03 05:21:13 UTC","vxid":"3/16","txid":0,"error_severity":"LOG","message":"AUDIT: SESSION,1,1,READ,SELECT,,,\"SELECT pg_current_logfile('csvlog'), pg_current_logfile('jsonlog');\",<not logged>","application_name":"psql","backend_type":"client backend","query_id":0}
{"timestamp":"2026-12-03 05:21:13.906 UTC","user":"postgres","dbname":"postgres","pid":2852,"remote_host":"127.0.0.1","remote_port":58086,"session_id":"6b10fc49.b24","line_num":4,"ps":"idle","session_start":"2026-12-03 05:21:13 UTC","txid":0,"error_severity":"LOG","message":"disconnection: session time: 0:00:00.002 user=postgres database=postgres host=127.0.0.1 port=58086","application_name":"psql","backend_type":"client backend","query_id":0}
"""

CAROL, DAVE, TRUSTED = "6b10fc49.b19", "6b10fc49.b1c", "6b10fc49.b24"


def _events(records: list[pg.LogRecord], stats: Counter[str] | None = None) -> list[Event]:
    out = []
    for r in records:
        for e in pg.to_events(r, scope="acme", server="db", stats=stats):
            assert decode(encode(e)) == e
            out.append(e)
    return out


def _by_session(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for e in events:
        for link in e.links:
            if link.startswith("session:"):
                out.setdefault(link.rsplit(":", 1)[1], []).append(e)
    return out


def _write(tmp_path: Path, text: str, name: str = "pg.csv") -> Path:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return f


@pytest.mark.parametrize(("text", "name"), [(CSVLOG, "pg.csv"), (JSONLOG, "pg.json")])
def test_a_checked_credential_makes_the_session_authenticated_trust_only_claimed(
    tmp_path: Path, text: str, name: str
) -> None:
    stats: Counter[str] = Counter()
    events = _events(list(pg.fetch_records(_write(tmp_path, text, name))), stats)
    sessions = _by_session(events)
    carol = sessions[CAROL]
    assert [e.type for e in carol] == ["db.session.started", "db.query", "db.session.ended"]
    for e in carol:
        assert e.actor.id == "postgres:db:carol"
        assert (e.actor.assurance, e.actor.verified) == ("authenticated", True)
        raw: dict[str, Any] = e.raw or {}
        assert (raw["auth_method"], raw["auth_identity"]) == ("scram-sha-256", "carol")
    # trust: the server checked nothing, the log says so by having no `connection authenticated`
    trusted = sessions[TRUSTED]
    assert len(trusted) == 3
    for e in trusted:
        assert e.actor.id == "postgres:db:postgres"
        assert (e.actor.assurance, e.actor.verified) == ("claimed", False)
        assert "auth_method" not in (e.raw or {})
    # the `connection authenticated` line itself makes no event: it is folded into the session's
    assert stats["authentication"] == (2 if name == "pg.csv" else 1)
    assert not [e for e in events if "connection authenticated" in (e.raw or {}).get("message", "")]


def test_a_clear_text_password_is_a_checked_credential_a_failed_one_is_not(tmp_path: Path) -> None:
    events = _events(list(pg.fetch_records(_write(tmp_path, CSVLOG))))
    dave = _by_session(events)[DAVE]
    assert {(e.actor.assurance, (e.raw or {})["auth_method"]) for e in dave} == {("authenticated", "password")}
    (failed,) = [e for e in events if e.outcome == "failure"]
    assert failed.actor.id == "postgres:db:carol" and failed.actor.assurance == "claimed"


def test_records_without_the_stateful_reader_see_no_authentication() -> None:
    # to_events is per record: without fetch_log/fetch_records nothing vouches for the session
    events = _events(list(pg.parse(CSVLOG, format="csvlog")))
    assert {e.actor.assurance for e in events if e.actor.id != "postgres:db:unknown"} == {"claimed"}


@pytest.mark.parametrize(
    ("line", "assurance"),
    [
        ('connection authenticated: identity="CN=alice,O=acme" method=cert (/etc/pg_hba.conf:4)', "authenticated"),
        ('connection authenticated: identity="alice@ACME.IO" method=gss (/etc/pg_hba.conf:5)', "authenticated"),
        ('connection authenticated: identity="alice" method=peer (/etc/pg_hba.conf:1)', "authenticated"),
        # PostgreSQL 18 logs trust connections too: still no check of anything
        ('connection authenticated: user="alice" method=trust (/etc/pg_hba.conf:2)', "claimed"),
        # RFC 1413 ident: the client's own host vouches for the user
        ('connection authenticated: identity="alice" method=ident (/etc/pg_hba.conf:3)', "claimed"),
    ],
)
def test_the_method_decides(tmp_path: Path, line: str, assurance: str) -> None:
    lines = CSVLOG.splitlines(keepends=True)
    quoted = line.replace('"', '""')
    lines[1] = lines[1].replace(
        'connection authenticated: identity=""carol"" method=scram-sha-256 (/tmp/causelog-pg-da_adakf/postgres/pg_hba.conf:1)',
        quoted,
    )
    assert quoted in lines[1]
    events = _events(list(pg.fetch_records(_write(tmp_path, "".join(lines[:5])))))
    assert {e.actor.assurance for e in events} == {assurance}
    method = line.split("method=")[1].split()[0]
    assert {(e.raw or {})["auth_method"] for e in events} == {method}


def test_a_resumed_read_keeps_the_sessions_authentication_in_its_cursor(tmp_path: Path) -> None:
    lines = CSVLOG.splitlines(keepends=True)
    f = _write(tmp_path, "".join(lines[:3]))  # up to carol's `connection authorized`
    first = list(pg.fetch_log(f))
    cursor = first[-1][1]
    assert cursor["auth"] == {CAROL: ["scram-sha-256", "carol"]}
    with f.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines[3:]))
    rest = [r for r, _ in pg.fetch_log(f, cursor)]
    query = [e for e in _events(rest) if e.type == "db.query" and CAROL in " ".join(e.links)]
    assert [e.actor.assurance for e in query] == ["authenticated"]
    # closed sessions leave the cursor: it holds only what a later read may still need
    assert CAROL not in list(pg.fetch_log(f, cursor))[-1][1].get("auth", {})


def test_a_reused_pid_starts_a_new_session_with_no_authentication(tmp_path: Path) -> None:
    # the same pid, a new session id (a new backend): trust this time
    lines = CSVLOG.splitlines(keepends=True)
    reused = [line.replace("6b10fc49.b24", "6b10fc4a.b19").replace(",2852,", ",2841,") for line in lines[12:]]
    events = _events(list(pg.fetch_records(_write(tmp_path, "".join(lines[:5] + reused)))))
    assert {e.actor.assurance for e in _by_session(events)["6b10fc4a.b19"]} == {"claimed"}


STDERR = """\
2026-12-03 05:21:13.731 UTC [2841] LOG:  connection received: host=127.0.0.1 port=58050
2026-12-03 05:21:13.736 UTC [2841] carol@postgres LOG:  connection authenticated: identity="carol" method=scram-sha-256 (/etc/postgresql/15/main/pg_hba.conf:1)
2026-12-03 05:21:13.736 UTC [2841] carol@postgres LOG:  connection authorized: user=carol database=postgres application_name=probe
2026-12-03 05:21:13.737 UTC [2841] carol@postgres LOG:  statement: SELECT 1
2026-12-03 05:21:13.738 UTC [2841] carol@postgres LOG:  disconnection: session time: 0:00:00.006 user=carol database=postgres host=127.0.0.1 port=58050
2026-12-03 05:21:14.000 UTC [2841] LOG:  connection received: host=127.0.0.1 port=58051
2026-12-03 05:21:14.001 UTC [2841] carol@postgres LOG:  connection authorized: user=carol database=postgres application_name=probe
2026-12-03 05:21:14.002 UTC [2841] carol@postgres LOG:  statement: SELECT 2
"""


def test_stderr_sessions_derived_from_connection_lines_carry_it_too(tmp_path: Path) -> None:
    # the Debian default prefix, no %c: the session is derived from `connection received`
    events = _events(list(pg.fetch_records(_write(tmp_path, STDERR, "postgresql.log"), format="stderr")))
    assert [(e.type, e.actor.assurance) for e in events] == [
        ("db.session.started", "authenticated"),
        ("db.query", "authenticated"),
        ("db.session.ended", "authenticated"),
        # the pid's next session (trusted this time) inherits nothing from the one that ended
        ("db.session.started", "claimed"),
        ("db.query", "claimed"),
    ]
