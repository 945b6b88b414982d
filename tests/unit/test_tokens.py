"""API tokens (pipeline/tokens.py): hashes only, 0600 files, atomic edits seen at once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline import tokens
from pipeline.errors import ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_stores_only_the_hash_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    value = tokens.create(path, "ci-bot", "reader")
    assert value.startswith(tokens.PREFIX) and len(value) >= len(tokens.PREFIX) + 43  # 256 bits
    assert value not in path.read_text()
    assert mode(path) == 0o600
    [t] = tokens.load(path)
    assert (t.name, t.role, t.hash) == ("ci-bot", "reader", tokens.token_hash(value))


def test_tokens_are_random(tmp_path: Path) -> None:
    assert len({tokens.new_token() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(("name", "role", "message"), [
    ("ok", "root", "role 'root'"),
    ("", "reader", "token name ''"),
    ("has space", "reader", "token name 'has space'"),
])
def test_bad_names_and_roles_are_refused(tmp_path: Path, name: str, role: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tokens.create(tmp_path / "tokens.json", name, role)


def test_names_are_unique_and_revoke_removes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    tokens.create(path, "a", "reader")
    with pytest.raises(ConfigError, match="exists already"):
        tokens.create(path, "a", "admin")
    tokens.create(path, "b", "auditor")
    assert tokens.revoke(path, "a").name == "a"
    assert [t.name for t in tokens.load(path)] == ["b"]
    with pytest.raises(ConfigError, match="no token named 'a'"):
        tokens.revoke(path, "a")


def test_token_file_sees_a_revocation_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    value = tokens.create(path, "a", "reader")
    view = tokens.TokenFile(path)
    assert view.find(value).name == "a"  # type: ignore[union-attr]
    stamp = path.stat().st_mtime_ns
    tokens.revoke(path, "a")
    os.utime(path, ns=(stamp, stamp))  # same mtime: the inode (atomic replace) still tells
    assert view.find(value) is None
    assert view.find("clt_guess") is None


def test_no_token_file_means_no_token(tmp_path: Path) -> None:
    assert tokens.TokenFile(tmp_path / "missing.json").find("anything") is None


def test_malformed_token_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=str(path)):
        tokens.TokenFile(path).find("x")


def test_first_start_creates_one_admin_token(tmp_path: Path) -> None:
    path, admin = tmp_path / "tokens.json", tmp_path / "admin.token"
    tokens.create(path, "early-reader", "reader")  # a token made before the first start
    value = tokens.ensure_admin(path, admin)
    assert value is not None and admin.read_text().strip() == value and mode(admin) == 0o600
    assert tokens.TokenFile(path).find(value).role == "admin"  # type: ignore[union-attr]
    assert tokens.ensure_admin(path, admin) is None


def test_a_revoked_admin_token_stays_revoked_and_a_fresh_one_is_made(tmp_path: Path) -> None:
    path, admin = tmp_path / "tokens.json", tmp_path / "admin.token"
    leaked = tokens.ensure_admin(path, admin)
    assert leaked is not None
    tokens.revoke(path, "admin")
    tokens.create(path, "admin", "reader")  # the name is taken now
    fresh = tokens.ensure_admin(path, admin)
    assert fresh is not None and fresh != leaked and admin.read_text().strip() == fresh
    view = tokens.TokenFile(path)
    assert view.find(leaked) is None and view.find(fresh).name == "admin-2"  # type: ignore[union-attr]


def test_cli_token_prefers_the_environment(tmp_path: Path) -> None:
    admin = tmp_path / "admin.token"
    assert tokens.local_token(None, admin) is None
    admin.write_text("clt_file\n")
    assert tokens.local_token(None, admin) == "clt_file"
    assert tokens.local_token("clt_env", admin) == "clt_env"


def test_roles_are_ordered() -> None:
    assert tokens.role_allows("admin", "reader") and tokens.role_allows("auditor", "reader")
    assert not tokens.role_allows("reader", "auditor") and not tokens.role_allows("auditor", "admin")
    assert not tokens.role_allows("root", "reader")


def test_ingest_role_only_ingests(tmp_path: Path) -> None:
    from pipeline.tokens import role_allows

    assert role_allows("ingest", "ingest") and not role_allows("ingest", "reader")
    assert not any(role_allows(r, "ingest") for r in ("reader", "auditor", "admin"))


def test_receivers_trust_ingest_tokens_of_the_deployments_token_file(tmp_path: Path) -> None:
    from pipeline.cli.ingest_http import authorizer
    from pipeline.errors import ConfigError

    path = tmp_path / "tokens.json"
    reader = tokens.create(path, "grafana", "reader")
    with pytest.raises(ConfigError, match="role ingest"):
        authorizer(None, None, path)  # a file with no ingest token trusts no one: refused at start
    sender = tokens.create(path, "argocd", "ingest")
    check = authorizer(None, None, path)

    def sends(token: str) -> bool:
        return bool(check({"authorization": f"Bearer {token}"}, b"{}"))

    assert sends(sender) and not sends(reader) and not sends("clt_guess")
    tokens.revoke(path, "argocd")
    assert not sends(sender)  # re-read at once
