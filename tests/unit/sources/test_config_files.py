"""Config-file source: parsers, pure to_events, and the fetcher over a temp directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from keyed_helpers import tag

from pipeline.errors import DecodeError
from pipeline.model import decode, encode
from pipeline.sources import config_files as cf
from pipeline.sources.redact import redact_value

SECRET = "hunter2-very-secret"
MARK = redact_value(SECRET)
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


# -- file selection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("app.yaml", "yaml"),
        ("app.YML", "yaml"),
        ("a.json", "json"),
        ("pyproject.toml", "toml"),
        ("my.ini", "ini"),
        ("setup.cfg", "ini"),
        (".env", "env"),
        (".env.production", "env"),
        ("prod.env", "env"),
        ("app.properties", "properties"),
        ("README.md", None),
        ("app.yaml.swp", None),
        (".app.yaml.swp", None),
        ("app.yaml~", None),
        (".#app.yaml", None),
        ("#app.yaml#", None),
        ("4913", None),
    ],
)
def test_format_of(name: str, fmt: str | None) -> None:
    assert cf.format_of(name) == fmt


# -- parsers ---------------------------------------------------------------------------------


def test_parse_yaml_single_multi_and_empty() -> None:
    assert cf.parse(b"a: 1\nb: [x, y]\n", "yaml") == {"a": 1, "b": ["x", "y"]}
    assert cf.parse(b"a: 1\n---\nb: 2\n", "yaml") == [{"a": 1}, {"b": 2}]
    assert cf.parse(b"", "yaml") is None
    # Non-JSON types become JSON-safe.
    doc = cf.parse(b"1: one\nnull: x\nwhen: 2024-01-02\nbig: 123456789012345678901234567890\nn: .nan\n", "yaml")
    assert doc == {"1": "one", "null": "x", "when": "2024-01-02", "big": "123456789012345678901234567890", "n": "nan"}


def test_parse_yaml_error_names_line_not_text() -> None:
    with pytest.raises(DecodeError) as exc:
        cf.parse(b"a: 1\npassword: [hunter2\n", "yaml", "x.yaml")
    assert exc.value.reason == "bad_config"
    assert "x.yaml" in exc.value.message and "line" in exc.value.message
    assert "hunter2" not in exc.value.message


def test_parse_yaml_alias_bomb_is_rejected() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i, prev in zip("bcdefgh", "abcdefg", strict=True):
        bomb += f"{i}: &{i} [{', '.join(['*' + prev] * 10)}]\n"
    with pytest.raises(DecodeError) as exc:
        cf.parse(bomb.encode(), "yaml")
    assert exc.value.reason == "oversized"


def test_parse_json_toml() -> None:
    assert cf.parse(b'\xef\xbb\xbf{"a": {"b": 1.5}}', "json") == {"a": {"b": 1.5}}
    assert cf.parse(b'title = "x"\n[db]\nport = 5432\nwhen = 1979-05-27T07:32:00Z\n', "toml") == {
        "title": "x",
        "db": {"port": 5432, "when": "1979-05-27T07:32:00+00:00"},
    }
    for data, fmt in ((b'{"a": ', "json"), (b"a = = 1", "toml"), (b"\xff\xfe", "json")):
        with pytest.raises(DecodeError) as exc:
            cf.parse(data, fmt)
        assert exc.value.reason == "bad_config"


def test_parse_ini() -> None:
    text = (
        "top = 1\n"
        "[DEFAULT]\nlevel = info\n"
        "[database]\nHost = db.local\nPassword = %(x)s\nmulti = a\n  b\nskip-name-resolve\n"
        "; comment\n# comment\n"
    )
    assert cf.parse_ini(text) == {
        "top": "1",
        "DEFAULT": {"level": "info"},
        "database": {"Host": "db.local", "Password": "%(x)s", "multi": "a\nb", "skip-name-resolve": None},
    }
    with pytest.raises(ValueError, match="line"):
        cf.parse_ini("[s]\n  = novalue_key\n[broken\n")


def test_parse_env_tricky_lines() -> None:
    text = (
        "# comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "SPACED = padded  \n"
        "EMPTY=\n"
        "COMMENTED=abc # trailing comment\n"
        "HASH=abc#not-a-comment\n"
        "SINGLE='lit $HOME \\n # kept'\n"
        'DOUBLE="line1\\nline2 \\"q\\" # kept" # comment\n'
        'MULTI="first\n'
        'second"\n'
        "BARE\n"
        "URL=postgres://u:p@h/db?x=1\n"
        "DUP=1\n"
        "DUP=2\n"
    )
    assert cf.parse_env(text) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "padded",
        "EMPTY": "",
        "COMMENTED": "abc",
        "HASH": "abc#not-a-comment",
        "SINGLE": "lit $HOME \\n # kept",
        "DOUBLE": 'line1\nline2 "q" # kept',
        "MULTI": "first\nsecond",
        "BARE": None,
        "URL": "postgres://u:p@h/db?x=1",
        "DUP": "2",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not an assignment here\n", "line 1"),
        ("A=1\nB='unterminated\n", "line 2: unterminated"),
        ('A="x" junk\n', "after the closing quote"),
        ("=novalue\n", "line 1"),
    ],
)
def test_parse_env_errors(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        cf.parse_env(text)
    with pytest.raises(DecodeError):
        cf.parse(text.encode(), "env")


def test_parse_properties_tricky_lines() -> None:
    text = (
        "# comment\n"
        "! also a comment \\\n"
        "a=1\n"
        "b : 2\n"
        "c 3\n"
        "  d=  spaced value  \n"
        "long = one, \\\n"
        "       two, \\\n"
        "       three\n"
        "key\\ with\\ spaces = v\n"
        "esc\\=key = x\\ty\n"
        "uni = caf\\u00e9\n"
        "empty\n"
        "even = ends with backslash \\\\\n"
        "next = n\n"
        "spring.datasource.password=" + SECRET + "\n"
    )
    assert cf.parse_properties(text) == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "spaced value  ",
        "long": "one, two, three",
        "key with spaces": "v",
        "esc=key": "x\ty",
        "uni": "café",
        "empty": "",
        "even": "ends with backslash \\",
        "next": "n",
        "spring.datasource.password": SECRET,
    }
    with pytest.raises(ValueError, match="uXXXX"):
        cf.parse_properties("bad = \\u12x4\n")
    # Latin-1 bytes are accepted for .properties only.
    assert cf.parse(b"name = caf\xe9\n", "properties") == {"name": "café"}


# -- to_events -------------------------------------------------------------------------------


def _change(**kw: Any) -> cf.ConfigChange:
    base: dict[str, Any] = {
        "root": "/srv/conf",
        "path": "app/db.yaml",
        "fmt": "yaml",
        "action": "update",
        "seq": 7,
        "host": "box",
        "time": T0,
        "digest": "hmac-sha256:v1:" + "b" * 32,
        "previous_digest": "hmac-sha256:v1:" + "a" * 32,
        "size": 42,
        "before": {"db": {"host": "a", "password": "old-" + SECRET}},
        "after": {"db": {"host": "b", "password": SECRET}},
        "attribution": {"via": "os", "user": "alice", "reason": "not in a git repository"},
    }
    return cf.ConfigChange(**{**base, **kw})


def test_to_events_update_redacts_secret_in_diff_and_raw() -> None:
    [ev] = cf.to_events(_change(), scope="acme")
    assert ev.type == "config.changed" and ev.action == "update" and ev.outcome == "success"
    assert ev.target.kind == "config.file" and ev.target.id == "conf/app/db.yaml"
    assert ev.source == "config://box/srv/conf" and ev.subject == "app/db.yaml" and ev.source_seq == 7
    assert ev.time == T0
    assert ev.actor.id == "os:alice@box" and ev.actor.assurance == "claimed" and ev.links == ()
    assert ev.diff is not None
    assert ev.diff["changed"] == ["db.host", "db.password"]
    assert ev.diff["after"]["db.password"] == MARK
    assert ev.diff["before"]["db.password"] == redact_value("old-" + SECRET)
    wire = encode(ev)
    assert SECRET.encode() not in wire
    assert ev.raw["document"]["db"]["password"] == MARK  # type: ignore[index]
    assert decode(wire) == ev


def test_to_events_create_delete_and_ids() -> None:
    [created] = cf.to_events(_change(action="create", before=None, previous_digest=None), scope="acme")
    assert created.diff == {
        "changed": ["db.host", "db.password"],
        "before": {},
        "after": {"db.host": "b", "db.password": MARK},
    }
    [deleted] = cf.to_events(_change(action="delete", after=None, digest=None, size=None, seq=8), scope="acme")
    assert deleted.diff is not None and deleted.diff["changed"] == ["db.host", "db.password"]
    assert deleted.diff["after"] == {} and "document" not in deleted.raw  # type: ignore[operator]
    # Deterministic ids; a different seq (a revert to earlier content) gives a new id.
    assert cf.to_events(_change(), scope="acme")[0].id == cf.to_events(_change(), scope="acme")[0].id
    assert cf.to_events(_change(), scope="acme")[0].id != cf.to_events(_change(seq=9), scope="acme")[0].id


def test_to_events_list_document_create_has_no_root_noise() -> None:
    [ev] = cf.to_events(_change(action="create", before=None, after=[{"a": 1}, {"b": 2}]), scope="acme")
    assert ev.diff is not None and ev.diff["changed"] == ["[0].a", "[1].b"]


def test_to_events_git_attribution() -> None:
    attribution = {"via": "git", "commit": "c" * 40, "name": "Bob", "email": "Bob@Example.com", "date": "x"}
    [ev] = cf.to_events(_change(attribution=attribution), scope="acme")
    assert ev.actor.id == "git:bob@example.com" and ev.actor.display == "Bob"
    assert ev.actor.assurance == "claimed" and ev.actor.kind == "human"
    assert ev.links == ("commit:" + "c" * 40,)


def test_to_events_unknown_before_and_digest_only() -> None:
    [ev] = cf.to_events(_change(before=None, before_known=False), scope="acme")
    assert ev.diff is not None and ev.diff["before_known"] is False
    [big] = cf.to_events(_change(after=None, after_known=False), scope="acme")
    assert big.diff is not None and big.diff["digest_only"] is True and big.diff["changed"] == ["$"]
    assert "document_omitted" in big.raw  # type: ignore[operator]


def test_to_events_raises_the_parse_error() -> None:
    err = DecodeError("bad_config", "x.yaml: not valid YAML")
    with pytest.raises(DecodeError):
        cf.to_events(_change(error=err), scope="acme")


# -- fetcher ---------------------------------------------------------------------------------


def _os_only(rel: str, action: str) -> dict[str, Any]:
    return {"via": "os", "user": "tester", "reason": "test"}


def _run(root: Path, cursor: Any) -> tuple[list[Any], Any]:
    recs = list(cf.fetch_changes(root, cursor, host="box", attribute=_os_only))
    events: list[Any] = []
    for r in recs:
        try:
            events.extend(cf.to_events(r.payload, scope="acme"))
        except DecodeError as exc:
            events.append(exc)
    # What the runner would commit: the cursor as JSON, read back on the next run.
    state = orjson.loads(orjson.dumps(recs[-1].cursor)) if recs else cursor
    return events, state


def test_fetch_backfill_edit_delete_and_bad_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.yaml").write_text("ignored: true\n")
    (tmp_path / "a.yaml").write_text(f"db:\n  host: a\n  password: {SECRET}\n")
    (tmp_path / "sub" / "b.json").write_text('{"x": 1}')
    (tmp_path / ".env").write_text("API_TOKEN=tok-1234567890\nMODE=dev\n")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "a.yaml.swp").write_text("ignored")

    events, state = _run(tmp_path, None)
    assert [e.subject for e in events] == [".env", "a.yaml", "sub/b.json"]
    assert all(e.action == "create" for e in events)
    assert SECRET not in orjson.dumps(state).decode() and "tok-1234567890" not in orjson.dumps(state).decode()
    assert state["seq"] == 3

    again, state = _run(tmp_path, state)
    assert again == []

    (tmp_path / "a.yaml").write_text(f"db:\n  host: b\n  password: {SECRET}x\n")
    (tmp_path / "sub" / "b.json").unlink()
    (tmp_path / "c.toml").write_text("a = [")
    events, state = _run(tmp_path, state)
    assert isinstance(events[1], DecodeError) and events[1].reason == "bad_config"
    upd, dele = events[0], events[2]
    assert upd.action == "update" and upd.diff["changed"] == ["db.host", "db.password"]
    assert upd.diff["after"]["db.password"] == redact_value(SECRET + "x")
    assert dele.action == "delete" and dele.diff["changed"] == ["x"] and dele.source_seq == 6
    # The bad file is recorded and not retried while unchanged; fixing it emits a create.
    assert state["files"]["c.toml"]["bad"] is True
    assert _run(tmp_path, state)[0] == []
    (tmp_path / "c.toml").write_text("a = [1]\n")
    events, state = _run(tmp_path, state)
    assert len(events) == 1 and events[0].action == "create" and events[0].diff["after"] == {"a": [1]}


def test_fetch_large_file_is_digest_only(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text('{"k": "' + "x" * (cf.MAX_FILE_BYTES + 10) + '"}')
    events, state = _run(tmp_path, None)
    assert events[0].diff["digest_only"] is True
    assert "doc" not in state["files"]["big.json"]
    (tmp_path / "big.json").write_text('{"k": 1}')
    events, state = _run(tmp_path, state)
    assert events[0].diff["before_known"] is False and events[0].diff["after"] == {"k": 1}


def test_fetch_stat_cache_notices_same_size_edits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "a.env"
    f.write_text("A=1\n")
    cache: cf.StatCache = {}
    recs = list(cf.fetch_changes(tmp_path, None, cache=cache, host="box", attribute=_os_only))
    state = recs[-1].cursor
    f.write_text("A=2\n")  # same size, within the racy window
    recs = list(cf.fetch_changes(tmp_path, state, cache=cache, host="box", attribute=_os_only))
    assert len(recs) == 1 and recs[0].payload.after == {"A": "2"}
    # An old, unchanged file is served from the cache without reading it.
    os.utime(f, ns=(0, 0))
    assert list(cf.fetch_changes(tmp_path, state, cache=cache, host="box", attribute=_os_only)) == []

    def no_read(self: Path) -> bytes:
        raise AssertionError(f"{self} read despite the cache")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    assert list(cf.fetch_changes(tmp_path, state, cache=cache, host="box", attribute=_os_only)) == []


def _git(cwd: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="Carol", GIT_AUTHOR_EMAIL="carol@example.com",
               GIT_COMMITTER_NAME="Carol", GIT_COMMITTER_EMAIL="carol@example.com",
               GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_SYSTEM="/dev/null")  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_git_attribution_clean_dirty_untracked(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    conf = repo / "conf"
    conf.mkdir(parents=True)
    _git(repo, "init", "-q")
    (conf / "a.yaml").write_text("a: 1\n")
    (conf / "b.yaml").write_text("b: 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    (conf / "b.yaml").write_text("b: 2\n")
    (conf / "c.yaml").write_text("c: 1\n")
    recs = {r.payload.path: r.payload for r in cf.fetch_changes(conf, None, host="box")}
    a, b, c = recs["a.yaml"], recs["b.yaml"], recs["c.yaml"]
    assert a.attribution["via"] == "git" and a.attribution["email"] == "carol@example.com"
    [ev] = cf.to_events(a, scope="acme")
    assert ev.actor.id == "git:carol@example.com" and ev.links[0].startswith("commit:")
    assert b.attribution["via"] == "os" and "differs" in b.attribution["reason"]
    assert c.attribution["via"] == "os" and "not tracked" in c.attribution["reason"]
    # Outside a repository: the OS user.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.ini").write_text("[s]\nk = v\n")
    [rec] = cf.fetch_changes(plain, None, host="box")
    assert rec.payload.attribution["via"] == "os" and rec.payload.attribution["reason"] == "not in a git repository"


def test_file_digests_are_keyed_so_a_one_line_secret_file_cannot_be_guessed(tmp_path: Path) -> None:
    body = b"DB_PASSWORD=hunter2\n"
    (tmp_path / ".env").write_bytes(body)
    events, state = _run(tmp_path, None)
    (created,) = events
    assert created.raw["digest"] == tag(body) == state["files"][".env"]["digest"]
    # the attack a plain digest allowed: the redacted document shows the shape, guess the value
    blob = encode(created).decode() + orjson.dumps(state).decode()
    for guess in ("password", "hunter2", "letmein"):
        assert hashlib.sha256(f"DB_PASSWORD={guess}\n".encode()).hexdigest() not in blob


def test_a_cursor_of_the_former_plain_digests_is_rekeyed_without_events(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    (tmp_path / "b.yaml").write_text("y: 1\n")
    _, state = _run(tmp_path, None)
    for rel, entry in state["files"].items():  # what the previous version stored
        del entry["digest"]
        entry["sha256"] = hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
    (tmp_path / "b.yaml").write_text("y: 2\n")
    events, state = _run(tmp_path, state)
    assert [(e.subject, e.action, e.diff["changed"]) for e in events] == [("b.yaml", "update", ["y"])]
    assert {rel: set(e) for rel, e in state["files"].items()} == {
        "a.yaml": {"digest", "fmt", "doc", "n"}, "b.yaml": {"digest", "fmt", "doc", "n"}
    }
    assert _run(tmp_path, state)[0] == []
